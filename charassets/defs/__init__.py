"""Dagster wiring only: partitions, resources, assets per stage, checks, jobs."""
