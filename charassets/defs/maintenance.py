"""Table maintenance: compaction, log checkpoints and vacuum of every Delta table, on a schedule.

Each partition write adds a file and a log entry, and replaces (not deletes) the files it
overwrites; the tag-vector cache grows by appends. Left alone, millions of records leave
thousands of small files and superseded files. ``maintain_tables`` compacts each table,
de-duplicates the tag-vector cache, checkpoints the log and vacuums files that no version
younger than the retention period refers to. It runs nightly (``maintenance_schedule``,
started with the daemon) and from the UI or ``charassets maintain`` at any time.
"""

import os

import dagster as dg

from charassets.defs.resources import LakeResource
from charassets.domain.lake import Lake
from charassets.domain.tables import maintained_tables

# every Delta table the registry marks maintained (charassets/domain/tables.py), in lineage order
TABLES: list[tuple[str, str]] = [t.key for t in maintained_tables()]


MIN_LIVE_RETENTION_HOURS = 1  # a writer commits within minutes of writing its files


class MaintenanceConfig(dg.Config):
    retention_hours: int = int(os.environ.get("CHARASSETS_VACUUM_RETENTION_HOURS", "168"))
    target_file_mb: int = 128


def maintain_lake(lake: Lake, retention_hours: int, target_size: int | None, log=None) -> dict[str, dict[str, int]]:
    """Maintain every existing table; a table that fails (e.g. a concurrent writer won) is reported, the rest go on."""
    from charassets.domain.models.features import TAG_VECTORS, compact_tag_cache

    out: dict[str, dict[str, int]] = {}
    for stage, name in TABLES:
        if not lake.exists(stage, name):
            continue
        try:
            extra = {"duplicates_removed": compact_tag_cache(lake, *TAG_VECTORS)} if (stage, name) == TAG_VECTORS else {}
            out[f"{stage}/{name}"] = {**lake.maintain(stage, name, retention_hours, target_size), **extra}
        except Exception as e:  # noqa: BLE001 - one table's conflict must not stop the others
            out[f"{stage}/{name}"] = {"error": f"{type(e).__name__}: {e}"[:300]}  # type: ignore[dict-item]
            if log:
                log.warning(f"{stage}/{name}: maintenance failed: {e}")
    return out


@dg.op(description="Compact, checkpoint and vacuum every Delta table of the lake.")
def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> dict:
    if config.retention_hours < MIN_LIVE_RETENTION_HOURS:
        live = context.instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.QUEUED])
        )
        others = [r.dagster_run.run_id for r in live if r.dagster_run.run_id != context.run_id]
        if others:  # their written-but-uncommitted files look exactly like a killed writer's leftovers
            raise dg.Failure(
                f"retention {config.retention_hours} h while {len(others)} run(s) may be writing: vacuum would delete their "
                f"uncommitted files; wait for them, or use a retention of at least {MIN_LIVE_RETENTION_HOURS} h"
            )
    report = maintain_lake(lake.lake(), config.retention_hours, config.target_file_mb * 2**20, context.log)
    context.add_output_metadata({"tables": dg.MetadataValue.json(report)})
    failed = [t for t, r in report.items() if "error" in r]
    if failed:
        raise dg.Failure(f"maintenance failed for {failed}", metadata={"tables": dg.MetadataValue.json(report)})
    return report


@dg.job(description="Table maintenance: compaction, checkpoints, vacuum (nightly, or on demand).")
def maintain_lake_job():
    maintain_tables()


maintenance_schedule = dg.ScheduleDefinition(
    job=maintain_lake_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
