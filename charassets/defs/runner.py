"""Running the graph from Python: register sources, then materialize partitions in batches.

Used by the CLI and the tests. Runs execute in this process against the given instance
(the project's persistent one, so they appear in the UI, or an ephemeral one), each run
covering a contiguous range of at most ``per_run`` partition keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from charassets.defs.partitions import PARTITIONS_PER_RUN, record_chunks

FINAL_ASSET = dg.AssetKey(["exports", "character_attributes_files"])
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class RunReport:
    partitions: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)


def _log_config(level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def register(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    """Materialize ``raw/source_partitions``; returns every registered partition key."""
    result = defs.resolve_job_def("register_sources").execute_in_process(instance=instance, run_config=_log_config("WARNING"))
    if not result.success:
        raise RuntimeError("registering sources failed")
    return instance.get_dynamic_partitions(record_chunks.name)


def run_partitions(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    partitions: list[str] | None = None,
    per_run: int = PARTITIONS_PER_RUN,
    log_level: str = "INFO",
    only_missing: bool = False,
    job_name: str = "character_pipeline",
    register_first: bool = True,
) -> RunReport:
    """Register sources, then run ``character_pipeline`` over ``partitions`` (default: all).

    ``only_missing`` skips partitions the final table already has (new files only).
    """
    report = RunReport()
    t0 = time.perf_counter()
    known = register(defs, instance) if register_first else instance.get_dynamic_partitions(record_chunks.name)
    report.seconds["register"] = round(time.perf_counter() - t0, 3)
    wanted = known if partitions is None else [k for k in known if k in set(partitions)]
    if only_missing:
        done = instance.get_materialized_partitions(FINAL_ASSET)
        wanted = [k for k in wanted if k not in done]
    unknown = sorted(set(partitions or []) - set(known))
    if unknown:
        raise ValueError(f"unknown partitions: {unknown[:5]}")
    job = defs.resolve_job_def(job_name)
    # contiguous runs of the instance's key order, at most per_run keys each
    position = {k: i for i, k in enumerate(known)}
    batches: list[list[str]] = []
    for key in wanted:
        if batches and len(batches[-1]) < per_run and position[key] == position[batches[-1][-1]] + 1:
            batches[-1].append(key)
        else:
            batches.append([key])
    t1 = time.perf_counter()
    for batch in batches:
        tags = {RANGE_START: batch[0], RANGE_END: batch[-1]} if len(batch) > 1 else {"dagster/partition": batch[0]}
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=True, run_config=_log_config(log_level))
        report.runs.append(result.run_id)
        for ev in result.get_asset_check_evaluations():
            if not ev.passed:
                report.failed_checks.append(f"{ev.asset_key.to_user_string()}:{ev.check_name}")
        report.partitions += batch
    report.seconds["pipeline"] = round(time.perf_counter() - t1, 3)
    return report


def heads_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata of ``models/attribute_heads`` from a training run."""
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["models", "attribute_heads"])]
    return event.materialization.metadata


def train(
    defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "INFO", run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    """Run ``train_heads`` (every materialized partition feeds it)."""
    config = {**_log_config(log_level), **(run_config or {})}
    return defs.resolve_job_def("train_heads").execute_in_process(instance=instance, run_config=config, raise_on_error=True)


@dataclass
class BuildReport:
    prepared: RunReport
    trained: dg.ExecuteInProcessResult
    published: RunReport
    seconds: dict[str, float]

    @property
    def failed_checks(self) -> list[str]:
        trained = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in self.trained.get_asset_check_evaluations() if not e.passed]
        return self.prepared.failed_checks + trained + self.published.failed_checks


def build_everything(
    defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "INFO", per_run: int = PARTITIONS_PER_RUN
) -> BuildReport:
    """A full build: per-record assets up to labels and embeddings, then heads and profiles, then the final table once."""
    t0 = time.perf_counter()
    prepared = run_partitions(defs, instance, per_run=per_run, log_level=log_level, job_name="prepare_records")
    t1 = time.perf_counter()
    trained = train(defs, instance, log_level=log_level)
    t2 = time.perf_counter()
    published = run_partitions(defs, instance, per_run=per_run, log_level=log_level, job_name="publish", register_first=False)
    seconds = {"prepare_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1), "publish_s": round(time.perf_counter() - t2, 1)}
    return BuildReport(prepared, trained, published, seconds)
