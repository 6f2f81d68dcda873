"""The Dagster graph materialized into a temporary lake: re-runs replace partitions exactly."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from charassets.definitions import build_definitions
from charassets.defs.checks import row_accounting_all_partitions
from charassets.defs.resources import LakeResource
from charassets.domain.demo import generate
from charassets.domain.schema import record_model
from charassets.runner import run_partitions

TABLES = [("raw", "records"), ("raw", "rejects"), ("clean", "tags"), ("labels", "tag_attributes"), ("marts", "character_attributes")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    sources = generate(root / "demo", n=3000, rows_per_partition=600, malformed_rate=0.02)
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(root / "lake"), "CHARASSETS_HOME": str(root)}
    defs = build_definitions(env)
    instance = dg.DagsterInstance.ephemeral()
    return defs, instance, defs.resources["lake"].lake()


def snapshot(lake) -> dict:
    return {t: lake.partition_counts(*t) for t in TABLES}


def test_full_backfill_then_rerun_changes_nothing(setup):
    defs, instance, lake = setup
    report = run_partitions(defs, instance, per_run=3, log_level="WARNING")  # several multi-partition runs
    assert len(report.partitions) == 5 and len(report.runs) == 2 and not report.failed_checks
    first = snapshot(lake)
    registry = lake.read("raw", "source_partitions")
    for key, n in registry.select("partition", "row_count").iter_rows():
        assert first[("raw", "records")][key] + first[("raw", "rejects")].get(key, 0) == n
        assert first[("marts", "character_attributes")][key] == n  # one output row per input row
    assert sum(first[("raw", "rejects")].values()) > 20  # the malformed rows are there, quarantined
    versions = {t: lake.table_stats(*t)["version"] for t in TABLES}
    run_partitions(defs, instance, per_run=50, log_level="WARNING")  # all partitions in one run
    assert snapshot(lake) == first
    assert all(lake.table_stats(*t)["version"] > versions[t] for t in TABLES)  # really rewritten
    ids = lake.read("marts", "character_attributes").get_column("row_index")
    assert ids.len() == sum(first[("marts", "character_attributes")].values())


def test_single_and_partial_runs_touch_no_other_partition(setup):
    defs, instance, lake = setup
    run_partitions(defs, instance, log_level="WARNING")
    keys = lake.read("raw", "source_partitions").get_column("partition").to_list()
    before = lake.read("marts", "character_attributes").sort("partition", "row_index")
    files_before = {
        p
        for p in pl.DataFrame(
            __import__("deltalake").DeltaTable(lake.uri("marts", "character_attributes")).get_add_actions(flatten=True)
        ).get_column("path")
    }
    called = []  # made here, the runs get nothing started beside them (a thread initialising a sqlite store would race them)
    run_partitions(defs, instance, partitions=[keys[1]], log_level="WARNING", meanwhile=lambda: called.append(1))  # one partition
    assert called == []
    run_partitions(defs, instance, partitions=keys[2:4], per_run=2, log_level="WARNING")  # a two-partition run
    after = lake.read("marts", "character_attributes").sort("partition", "row_index")
    assert after.equals(before)
    files_after = {
        p
        for p in pl.DataFrame(
            __import__("deltalake").DeltaTable(lake.uri("marts", "character_attributes")).get_add_actions(flatten=True)
        ).get_column("path")
    }
    untouched = [k for k in keys if k not in keys[1:4]]
    assert all(any(f"partition={k}/" in f for f in files_before & files_after) for k in untouched)
    assert not any(f"partition={keys[1]}/" in f for f in files_before & files_after)  # that one was rewritten


def test_whole_table_checks_and_every_row_validates(setup):
    defs, instance, lake = setup
    run_partitions(defs, instance, log_level="WARNING")
    result = row_accounting_all_partitions(lake=LakeResource(root=lake.root))
    assert result.passed, result.metadata
    model = record_model(defs.resources["catalog"].ontology())
    import glob
    import gzip

    files = sorted(glob.glob(lake.root + "/exports/character_attributes/jsonl/*.jsonl.gz"))
    rows = [model.model_validate_json(line) for f in files for line in gzip.decompress(Path(f).read_bytes()).decode("utf-8").splitlines()]
    assert len(rows) == sum(lake.partition_counts("marts", "character_attributes").values())
    statuses = {r.status for r in rows}
    assert statuses == {"ok", "ambiguous", "no_character", "rejected"}
    assert all(r.reason for r in rows if r.status == "rejected")
    dumped = rows[0].model_dump(by_alias=True)
    if dumped["attributes"]:
        assert {"Age", "Gender", "Ethnicity", "Hair Style", "Hair Color", "Hair Length", "Eye Color", "Body Type", "Dress"} <= set(
            dumped["attributes"]
        )


def test_bad_schema_rows_fail_the_partition_instead_of_landing(setup, monkeypatch):
    defs, instance, lake = setup
    run_partitions(defs, instance, log_level="WARNING")
    before = snapshot(lake)[("marts", "character_attributes")]
    import charassets.defs.marts.assets as marts

    real = marts.mart_stage
    monkeypatch.setattr(marts, "mart_stage", lambda *a: real(*a).with_columns(pl.lit("bogus").alias("status")))
    with pytest.raises(dg.Failure, match="schema violations"):
        run_partitions(defs, instance, partitions=[next(iter(before))], log_level="CRITICAL")
    assert snapshot(lake)[("marts", "character_attributes")] == before


def test_a_new_file_adds_partitions_and_recomputes_nothing_else(tmp_path):
    sources = generate(tmp_path / "demo", n=1200, rows_per_partition=500)
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_LAKE": str(tmp_path / "lake"), "CHARASSETS_HOME": str(tmp_path)}
    defs = build_definitions(env)
    lake = defs.resources["lake"].lake()
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partitions(defs, instance, log_level="WARNING")
        versions = {t: lake.table_stats(*t)["version"] for t in TABLES}
        again = run_partitions(defs, instance, log_level="WARNING", only_missing=True)
        assert again.partitions == [] and {t: lake.table_stats(*t)["version"] for t in TABLES} == versions
        pl.DataFrame({"id": [1, 2, 3], "tags": ["1girl, red hair", "1boy", None]}).write_parquet(
            sources.parent / "ordered" / "part-99999.parquet"
        )
        new = run_partitions(defs, instance, log_level="WARNING", only_missing=True)
    assert len(new.partitions) == 1 and new.partitions[0] not in first.partitions
    counts = lake.partition_counts("marts", "character_attributes")
    assert counts[new.partitions[0]] == 3 and len(counts) == len(first.partitions) + 1
    assert (
        lake.table_stats("marts", "character_attributes")["version"] == versions[("marts", "character_attributes")] + 1
    )  # one write: the new partition


def test_a_runs_progress_is_logged_every_so_often_and_after_its_last_partition(monkeypatch):
    """One progress line per ``PROGRESS_EVERY_S`` seconds, and one after the last partition (each line is an event
    the instance stores); every partition's figures still go to its own materialization's metadata."""
    from types import SimpleNamespace

    from charassets.defs import partitions

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(partitions, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    takes = {"a": 4.0, "b": 4.0, "c": 4.0, "d": 1.0, "e": 1.0}

    def work(key: str) -> dict:
        clock.now += takes[key]
        return {"records": len(key)}

    lines, metadata = [], []
    context = SimpleNamespace(
        partition_keys=list(takes),
        selected_asset_keys=[dg.AssetKey(["clean", "tags"])],
        op_def=SimpleNamespace(name="clean__tags"),
        log=SimpleNamespace(info=lines.append),
        add_asset_metadata=lambda figures, asset_key, partition_key: metadata.append(partition_key),
    )
    stats = partitions.for_each_partition(context, work)
    assert [s["partition"] for s in stats] == list(takes) and metadata == list(takes)
    assert [line.split(" partitions")[0] for line in lines] == ["clean__tags: 3/5", "clean__tags: 5/5"]  # at 12 s, and the end
