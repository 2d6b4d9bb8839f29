"""scripts/bench: load generators, the bench stack, the runner and the report."""
