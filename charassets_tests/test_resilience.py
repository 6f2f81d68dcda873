"""Resilience: concurrent writers, parallel runs, kill -9 and resume, malformed input, table maintenance."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import given, settings
from hypothesis import strategies as st

from charassets.definitions import build_definitions
from charassets.defs.maintenance import TABLES, maintain_lake
from charassets.domain.demo import generate
from charassets.domain.lake import Lake
from charassets.runner import (
    POLARS_OWN_ALLOCATOR,
    WORKER_ALLOCATOR,
    _worker_pool,
    balanced_batches,
    in_idle_time,
    run_partitions,
    worker_allocator,
)
from charassets_tests.conftest import lake_env

ROOT = Path(__file__).resolve().parents[1]
STAGE_TABLES = [("raw", "records"), ("raw", "rejects"), ("clean", "tags"), ("labels", "tag_attributes"), ("marts", "character_attributes")]


def _writer(root: str, partitions: list[str], start, rounds: int, retries) -> None:
    from charassets.domain.lake import COMMIT_RETRIES

    lake = Lake(root)
    start.wait()
    for _ in range(rounds):
        for p in partitions:
            df = pl.DataFrame({"partition": [p] * 100, "row": list(range(100)), "writer": [os.getpid()] * 100})
            lake.write_partitions("t", "shared", df, [p])
    retries.put(COMMIT_RETRIES["count"])


def test_concurrent_writers_to_one_table_lose_no_write(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_partitions("t", "shared", pl.DataFrame({"partition": ["seed"], "row": [0], "writer": [0]}), ["seed"])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    parts = [[f"a{i}" for i in range(8)], [f"b{i}" for i in range(8)], [f"c{i}" for i in range(8)]]
    retries = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), p, start, 3, retries)) for p in parts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    counts = lake.partition_counts("t", "shared")
    assert counts == {"seed": 1, **{k: 100 for group in parts for k in group}}  # every write there, none doubled
    assert DeltaTable(lake.uri("t", "shared")).version() == 3 * 8 * 3  # each write exactly one commit
    print(f"commit conflicts retried: {sum(retries.get() for _ in procs)}")


def test_conflicting_writers_to_one_partition_are_retried_and_never_doubled(tmp_path):
    """Two processes overwriting the same partition really conflict: one commit fails, is retried, and wins later."""
    lake = Lake(str(tmp_path))
    lake.write_partitions("t", "shared", pl.DataFrame({"partition": ["p"], "row": [0], "writer": [0]}), ["p"])
    ctx = multiprocessing.get_context("spawn")
    start, retries = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), ["p"], start, 30, retries)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    total_retries = sum(retries.get() for _ in procs)
    df = lake.read("t", "shared")
    assert df.height == 100 and df.get_column("writer").n_unique() == 1  # one writer's rows, whole, never both
    assert DeltaTable(lake.uri("t", "shared")).version() == 60  # all 60 overwrites committed
    assert total_retries > 0, "no conflict happened: the retry path was not exercised"
    print(f"conflicts retried: {total_retries}")


def test_overwrite_against_a_pinned_version_keeps_a_concurrent_append(tmp_path):
    """What the tag-cache compaction relies on: it replaces only the files of the version it read."""
    uri = str(tmp_path / "cache")
    write_deltalake(uri, pl.DataFrame({"tag": ["a", "a", "b"]}).to_arrow())
    pinned = DeltaTable(uri)
    write_deltalake(uri, pl.DataFrame({"tag": ["c"]}).to_arrow(), mode="append")  # a partition run appends meanwhile
    write_deltalake(pinned, pl.DataFrame({"tag": ["a", "b"]}).to_arrow(), mode="overwrite")
    assert sorted(pl.read_delta(uri).get_column("tag").to_list()) == ["a", "b", "c"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("resilience")
    sources = generate(root / "demo", n=6000, rows_per_partition=600, malformed_rate=0.01)
    return root, sources


def _mart(lake: Lake) -> pl.DataFrame:
    return lake.read("marts", "character_attributes").drop("partition").sort("record_id", "row_index", nulls_last=True)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 120), workers=st.integers(2, 8), per_run=st.integers(1, 60), dropped=st.sets(st.integers(0, 119)))
def test_worker_runs_cover_every_partition_once_in_even_contiguous_ranges(n, workers, per_run, dropped):
    known = [f"k{i:03d}" for i in range(n)]
    wanted = [k for i, k in enumerate(known) if i not in dropped] or known[:1]
    batches = balanced_batches(known, wanted, per_run, workers)
    assert [k for b in batches for k in b] == wanted  # each wanted key once, in order
    assert all(len(b) <= per_run for b in batches)
    assert all(known.index(b[-1]) - known.index(b[0]) == len(b) - 1 for b in batches)  # one contiguous range per run
    if len(wanted) == n:  # no gaps: a multiple of the workers, sizes within one, the larger first
        sizes = [len(b) for b in batches]
        assert len(batches) % workers == 0 or len(batches) == n
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_parallel_runs_match_sequential_runs(dataset, tmp_path):
    root, sources = dataset
    seq_env, par_env = lake_env(tmp_path / "seq", sources), lake_env(tmp_path / "par", sources)
    with dg.DagsterInstance.ephemeral() as instance:
        run_partitions(build_definitions(seq_env), instance, log_level="WARNING")
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        report = run_partitions(build_definitions(par_env), instance, log_level="WARNING", workers=2, env=par_env)
        assert len(report.runs) >= 4 and len(report.worker_peak_rss_mb) == 2  # two processes shared the runs
        assert not report.failed_checks
    seq, par = Lake(seq_env["CHARASSETS_LAKE"]), Lake(par_env["CHARASSETS_LAKE"])
    for t in STAGE_TABLES:
        assert par.partition_counts(*t) == seq.partition_counts(*t)
    assert _mart(par).equals(_mart(seq))


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
def test_work_in_idle_time_runs_at_the_lowest_priority_and_is_done_when_the_block_ends():
    """The parent's head start on training runs beside the block in a thread at nice 19 (on Linux, a thread's own:
    this thread keeps its priority). When the block ends the thread finishes its step and the steps it did not reach
    run here; a step's error is raised there; a block that raises leaves no step running; never started: all here."""
    import threading

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen, inside, ended = [], threading.Event(), threading.Event()

    def step(name, wait=None):
        def run():
            if wait is not None:
                assert wait.wait(5)
            seen.append((name, threading.current_thread() is threading.main_thread(), os.getpriority(os.PRIO_PROCESS, 0)))

        return run

    with in_idle_time([step("a", inside), step("b")]) as start:
        start()
        inside.set()
        while len(seen) < 2:  # the thread does both while the block goes on
            threading.Event().wait(0.01)
    assert seen == [("a", False, 19), ("b", False, 19)] and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine

    seen.clear()
    with in_idle_time([step("a", ended), step("b"), step("c")]) as start:
        start()
        threading.Timer(0.3, ended.set).start()  # the first step ends after the block did
    assert seen == [("a", False, 19), ("b", True, mine), ("c", True, mine)]  # the rest done here, at this priority

    seen.clear()
    with in_idle_time([step("a"), step("b")]):  # never started
        pass
    assert seen == [("a", True, mine), ("b", True, mine)]

    def fails():
        raise ValueError("no model store")

    with pytest.raises(ValueError, match="no model store"), in_idle_time([fails, step("never")]) as start:
        start()
    assert seen == [("a", True, mine), ("b", True, mine)]

    slow = threading.Event()
    threading.Timer(0.3, slow.set).start()
    with pytest.raises(RuntimeError, match="prepare failed"), in_idle_time([step("slow", slow), step("later")]) as start:
        start()
        raise RuntimeError("prepare failed")
    assert seen[-1] == ("slow", False, 19)  # finished before the error went on; the next step not run
    with in_idle_time([]) as start:
        assert start is None


def test_workers_keep_freed_memory_a_few_seconds_unless_the_environment_says_otherwise(tmp_path):
    # what polars itself writes into the environment at import is what the workers replace: if polars changes its own
    # default, this fails rather than the workers silently keeping polars' setting
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "POLARS_THP")}
    code = "import os, polars; print(os.environ['_RJEM_MALLOC_CONF'])"
    written = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert written == POLARS_OWN_ALLOCATOR
    # polars' own, also as a process whose parent imported polars inherits it (written twice)
    assert worker_allocator(None) == worker_allocator(POLARS_OWN_ALLOCATOR) == WORKER_ALLOCATOR
    assert worker_allocator(f"{POLARS_OWN_ALLOCATOR},{POLARS_OWN_ALLOCATOR}") == WORKER_ALLOCATOR
    assert worker_allocator("narenas:1") == "narenas:1"  # the user's own setting is kept
    assert worker_allocator(f"{POLARS_OWN_ALLOCATOR},narenas:1") == f"{POLARS_OWN_ALLOCATOR},narenas:1"
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        for setting, expected in ((os.environ.get("_RJEM_MALLOC_CONF"), WORKER_ALLOCATOR), ("narenas:1", "narenas:1")):
            with _worker_pool(1, instance, {**env, **({"_RJEM_MALLOC_CONF": setting} if setting else {})}) as pool:
                assert pool.submit(os.getenv, "_RJEM_MALLOC_CONF").result() == f"{POLARS_OWN_ALLOCATOR},{expected}"


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> Lake:
    """The reference: one uninterrupted run over the dataset."""
    _, sources = dataset
    root = tmp_path_factory.mktemp("uninterrupted")
    env = lake_env(root, sources)
    with dg.DagsterInstance.ephemeral() as instance:
        run_partitions(build_definitions(env), instance, log_level="WARNING")
    return Lake(env["CHARASSETS_LAKE"])


def _same_tables(lake: Lake, reference: Lake) -> None:
    """Every per-record table holds exactly what the uninterrupted run wrote: same rows, same values, none twice."""
    for t in STAGE_TABLES:
        got, want = (x.read(*t).sort("partition", "row_index") for x in (lake, reference))
        assert got.equals(want), t
        assert not got.select("partition", "row_index").is_duplicated().any(), t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_then_resume(dataset, uninterrupted, tmp_path, seed):
    """A backfill killed with SIGKILL at a random point leaves whole partitions or none; resuming gives the uninterrupted tables."""
    import random

    _, sources = dataset
    rng = random.Random(seed)
    env = {**os.environ, **lake_env(tmp_path, sources)}
    env.pop("DAGSTER_HOME", None)  # the CLI then keeps its instance under CHARASSETS_HOME
    lake = Lake(env["CHARASSETS_LAKE"])
    n_partitions = uninterrupted.read("raw", "source_partitions").height
    kill_after = rng.randrange(1, n_partitions - 1)  # partitions published before the kill...
    extra_delay = rng.uniform(0.0, 1.5)  # ...plus a random moment inside the next one
    cmd = [sys.executable, "-m", "charassets.cli", "run", "--per-run", str(rng.choice([1, 2, 3]))]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        for t in STAGE_TABLES:  # every table stays readable while the backfill writes
            if lake.exists(*t):
                lake.read(*t)
        if len(lake.partition_counts("marts", "character_attributes")) >= kill_after:
            time.sleep(extra_delay)
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    expected = dict(lake.read("raw", "source_partitions").select("partition", "row_count").iter_rows())
    partial = lake.partition_counts("marts", "character_attributes")
    assert len(partial) < len(expected)  # really killed midway
    assert all(partial[k] == expected[k] for k in partial)  # no half-written partition
    for t in STAGE_TABLES:
        lake.read(*t)  # readable after the kill

    resumed = subprocess.run([*cmd[:-2], "--missing"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_tables(lake, uninterrupted)
    final = lake.read("marts", "character_attributes")
    # ~1% malformed rows of every kind: each quarantined with its reason, none dropped
    rejected = final.filter(pl.col("status") == "rejected")
    assert rejected.height == lake.read("raw", "rejects").height > 0
    assert len(rejected.get_column("reason").str.replace(r"\d+", "N").unique()) >= 8


def test_two_concurrent_backfills_over_overlapping_partitions(dataset, uninterrupted, tmp_path):
    """Two CLI backfills at once, on one lake, over overlapping partitions: the tables equal one uninterrupted run."""
    _, sources = dataset
    keys = uninterrupted.read("raw", "source_partitions").get_column("partition").to_list()
    half = len(keys) // 2
    first, second = keys[: half + 2], keys[half - 2 :]  # four partitions written by both
    procs = []
    for i, part in enumerate((first, second)):
        env = {**os.environ, **lake_env(tmp_path, sources), "DAGSTER_HOME": str(tmp_path / f"instance{i}")}
        (tmp_path / f"instance{i}").mkdir()
        args = [sys.executable, "-m", "charassets.cli", "run", "--per-run", "2"] + [a for k in part for a in ("--partition", k)]
        procs.append(subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read().decode()[-3000:] if p.stderr else ""
    _same_tables(Lake(str(tmp_path / "lake")), uninterrupted)


def test_maintenance_compacts_and_vacuums_without_changing_data(dataset, tmp_path):
    _, sources = dataset
    env = lake_env(tmp_path, sources)
    defs = build_definitions(env)
    with dg.DagsterInstance.ephemeral() as instance:
        run_partitions(defs, instance, log_level="WARNING", per_run=2)
        run_partitions(defs, instance, log_level="WARNING", per_run=3)  # every partition rewritten: superseded files remain
    lake = Lake(env["CHARASSETS_LAKE"])
    orphan = Path(lake.uri("clean", "tags")) / "part-orphan-of-a-killed-writer.parquet"
    orphan.write_bytes(b"PAR1")  # a file no commit refers to
    before = {t: lake.read(*t) for t in TABLES if lake.exists(*t)}
    on_disk = {t: _parquet_files(lake, t) for t in before}
    assert any(on_disk[t] > lake.table_stats(*t)["files"] for t in before)
    report = maintain_lake(lake, retention_hours=0, target_size=None)
    assert not [r for r in report.values() if "error" in r], report
    assert report["features/tag_vectors"]["duplicates_removed"] >= 0
    for t, df in before.items():
        after = lake.read(*t)
        if t == ("features", "tag_vectors"):
            assert after.height == after.unique(["embedder", "tag"]).height == df.unique(["embedder", "tag"]).height
        else:
            assert after.sort(after.columns[:3]).equals(df.sort(df.columns[:3])), t
        assert _parquet_files(lake, t) == lake.table_stats(*t)["files"], t  # nothing unreferenced left
        assert lake.table_stats(*t)["files"] <= (len(lake.partition_counts(*t)) if "partition" in df.columns else 1), t
    # the Dagster job does the same, and a second pass finds nothing to do
    result = defs.resolve_job_def("maintain_lake_job").execute_in_process(
        run_config={"ops": {"maintain_tables": {"config": {"retention_hours": 0}}}}
    )
    assert result.success
    again = result.output_for_node("maintain_tables")
    assert all(r["files_compacted"] == 0 for r in again.values()), again
    for t in before:
        assert _parquet_files(lake, t) == lake.table_stats(*t)["files"], t


def _parquet_files(lake: Lake, table: tuple[str, str]) -> int:
    return sum(1 for f in Path(lake.uri(*table)).rglob("*.parquet") if "_delta_log" not in f.parts)
