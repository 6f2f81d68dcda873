"""Dagster wiring only: partitions, resources, assets per stage, checks, jobs."""

import warnings

import dagster as dg

# backfill_policy and check_specs are marked beta/preview; the project pins dagster exactly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
