"""The one partitions definition shared by every per-record asset, and the loop over it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from charassets.domain.tables import Table, table

# A partition is one chunk of one source file (at most ``rows_per_partition`` records),
# keyed ``<source>-<file digest>-<chunk>``; keys are added by ``raw/source_partitions``.
record_chunks = dg.DynamicPartitionsDefinition(name="record_chunks")

# One run processes its partitions one after another, so memory is bounded by one chunk
# whatever the backfill size; several runs can share a large backfill.
PARTITIONS_PER_RUN = int(os.environ.get("CHARASSETS_PARTITIONS_PER_RUN", "50"))
backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN)

# A run's progress line at most this often, and after its last partition: each line is an event the instance stores
# (~7 ms each with the default sqlite storage: the demo's 72 lines, one per partition and asset, took ~0.5 s), and
# every partition's figures are already in its own materialization's metadata.
PROGRESS_EVERY_S = 10.0


def source_of(partition: str) -> str:
    """The source name a partition key belongs to."""
    return partition.rsplit("-", 2)[0]


def for_each_partition(
    context: dg.AssetExecutionContext, work: Callable[[str], dict[str, Any]], row_counts: dict[tuple[str, ...], str] | None = None
) -> list[dict[str, Any]]:
    """Run ``work`` for each partition of this run, logging progress (every ``PROGRESS_EVERY_S`` seconds and at the
    end); returns its stats per partition.

    Each partition's materialization carries *its own* figures: ``dagster/row_count`` and
    every numeric stat are attached as partition-scoped metadata (they override the run's
    totals, so per-partition plots in the UI are not flat lines). ``row_counts`` maps each
    asset key of a multi-asset to the stat holding its row count; a single asset uses
    ``records``, ``rows`` or ``images``, whichever it reports.
    """
    keys = context.partition_keys
    assets = list(context.selected_asset_keys)
    mapping = {dg.AssetKey(list(k)): v for k, v in row_counts.items()} if row_counts else ({assets[0]: None} if len(assets) == 1 else {})
    results = []
    started = logged = time.perf_counter()
    for i, key in enumerate(keys, 1):
        t0 = time.perf_counter()
        stats = work(key)
        stats = {"partition": key, **stats, "seconds": round(time.perf_counter() - t0, 3)}
        results.append(stats)
        for asset_key, stat in mapping.items():
            stat = stat or next((k for k in ("records", "rows", "images") if k in stats), None)
            if asset_key not in assets or stat not in stats:
                continue
            figures = (
                {k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)} if len(mapping) == 1 else {}
            )
            context.add_asset_metadata({**figures, "dagster/row_count": int(stats[stat])}, asset_key=asset_key, partition_key=key)
        now = time.perf_counter()
        if len(keys) > 1 and (i == len(keys) or now - logged >= PROGRESS_EVERY_S):
            context.log.info(f"{context.op_def.name}: {i}/{len(keys)} partitions ({key}: {stats}) {now - started:.1f}s")
            logged = now
    return results


def asset_key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def table_deps(table: Table) -> list[dg.AssetKey]:
    """The asset keys of what ``table`` reads: its lineage edges, from the registry."""
    return [asset_key(r) for r in table.reads]


def table_spec(path: str, kinds: set[str], **kwargs) -> dg.AssetSpec:
    """The spec of one output of a multi-asset, from the registry."""
    t = table(path)
    return dg.AssetSpec(list(t.key), deps=table_deps(t), group_name=t.stage, kinds=kinds, description=t.description, **kwargs)


def table_asset(path: str, kinds: set[str], **kwargs):
    """An asset writing the registered table ``stage/name``: key, group, deps and partitioning come from the registry.

    A per-record table gets one partition per record chunk and the multi-run backfill
    policy; a whole-lake table (profiles, clusters, heads, the report) has no partitions.
    """
    t = table(path)
    partitioned = {"partitions_def": record_chunks, "backfill_policy": backfill_policy} if t.partitioned else {}
    return dg.asset(key=list(t.key), deps=table_deps(t), group_name=t.stage, kinds=kinds, **partitioned, **kwargs)
