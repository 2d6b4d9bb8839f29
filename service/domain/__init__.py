"""The domain layer: the application's logic, between the routers and the SQL."""
