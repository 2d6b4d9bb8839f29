"""The data layer: the pool, migrations and every SQL statement the service runs."""
