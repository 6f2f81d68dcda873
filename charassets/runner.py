"""Running the graph from Python: register sources, then materialize partitions in batches.

Used by the CLI, the benchmark and the tests. Each run covers a contiguous range of at
most ``per_run`` partition keys. With ``workers=1`` runs execute one after another in this
process against the given instance (the project's persistent one, so they appear in the
UI, or an ephemeral one). With ``workers>1`` they execute concurrently in that many worker
processes against the same persistent instance, each process building the definitions
from the same environment: the partitions of one table are written by several processes
at once, which the lake's commit retries make safe.
"""

from __future__ import annotations

import atexit
import gc
import logging
import math
import multiprocessing
import os
import resource
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field

import dagster as dg

from charassets.defs.jobs import HEADS
from charassets.defs.partitions import PARTITIONS_PER_RUN, record_chunks
from charassets.domain.lending import lending

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class RunReport:
    partitions: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    worker_peak_rss_mb: dict[int, float] = field(default_factory=dict)  # pid -> peak RSS, when workers ran the runs


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` survives ``execve``, so a spawned
    worker would report at least its parent's memory at the moment it was started.
    """
    found = process_peak_rss_mb("self")
    return found if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def process_peak_rss_mb(pid: int | str) -> float:
    """A running process's peak resident memory so far, in MB (Linux's ``VmHWM``); 0.0 where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _log_config(level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def register(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    """Materialize ``raw/source_partitions``; returns every registered partition key."""
    result = defs.resolve_job_def("register_sources").execute_in_process(instance=instance, run_config=_log_config("WARNING"))
    if not result.success:
        raise RuntimeError("registering sources failed")
    return instance.get_dynamic_partitions(record_chunks.name)


def complete_partitions(lake) -> set[str]:
    """Registered partitions every per-record table holds in full, counted in the lake against the registry.

    raw/records + raw/rejects hold the registered rows; clean/tags, labels and embeddings
    one row per record; the final table one row per registered row.
    A partition a killed run left half-written, or that another lake's event log believes
    done, is not complete.
    """
    if not lake.exists("raw", "source_partitions"):
        return set()
    registered = dict(lake.read("raw", "source_partitions").select("partition", "row_count").iter_rows())
    # (head predictions are not counted: heads run only on the records that may need them)
    per_record = [("clean", "tags"), ("labels", "tag_attributes"), ("features", "embeddings")]
    counts = {
        t: lake.partition_counts(*t) for t in [("raw", "records"), ("raw", "rejects"), ("marts", "character_attributes"), *per_record]
    }
    done = set()
    for key, rows in registered.items():
        records = counts[("raw", "records")].get(key, 0)
        if records + counts[("raw", "rejects")].get(key, 0) != rows or counts[("marts", "character_attributes")].get(key, 0) != rows:
            continue
        if all(counts[t].get(key, 0) == records for t in per_record):
            done.add(key)
    return done


def run_partitions(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    partitions: list[str] | None = None,
    per_run: int = PARTITIONS_PER_RUN,
    log_level: str = "INFO",
    only_missing: bool = False,
    job_name: str = "character_pipeline",
    register_first: bool = True,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    pool: ProcessPoolExecutor | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> RunReport:
    """Register sources, then run ``job_name`` over ``partitions`` (default: all).

    ``only_missing`` skips partitions the lake already holds in full (``complete_partitions``).
    ``workers>1`` runs batches concurrently in worker processes built from ``env`` (the
    environment ``defs`` came from); the instance must then be a persistent one. ``pool``:
    worker processes already started (``_worker_pool``), to reuse across calls. ``meanwhile``: called in this process
    once the workers have their runs (this process only waits for them then); not called when the runs are made here
    (one batch, or no workers): work it would start beside them could race them (two threads initialising sqlite
    stores through alembic, whose module-level context is not thread-safe, fail).
    """
    report = RunReport()
    t0 = time.perf_counter()
    known = register(defs, instance) if register_first else instance.get_dynamic_partitions(record_chunks.name)
    report.seconds["register"] = round(time.perf_counter() - t0, 3)
    wanted = known if partitions is None else [k for k in known if k in set(partitions)]
    if only_missing:  # the lake decides what is done, not the event log (which may belong to another lake)
        done = complete_partitions(defs.resources["lake"].lake())  # type: ignore[union-attr]
        wanted = [k for k in wanted if k not in done]
    unknown = sorted(set(partitions or []) - set(known))
    if unknown:
        raise ValueError(f"unknown partitions: {unknown[:5]}")
    batches = contiguous_batches(known, wanted, per_run) if workers <= 1 else balanced_batches(known, wanted, per_run, workers)
    t1 = time.perf_counter()
    if workers > 1 and len(batches) > 1:
        _run_in_workers(instance, batches, job_name, log_level, workers, env if env is not None else os.environ, report, pool, meanwhile)
    else:  # ``meanwhile`` is not called: this process runs the runs (say, beside a thread it would start)
        job = defs.resolve_job_def(job_name)
        for batch in batches:
            run_id, failed = _execute(job, instance, batch, log_level)
            report.runs.append(run_id)
            report.failed_checks += failed
            report.partitions += batch
    report.seconds["pipeline"] = round(time.perf_counter() - t1, 3)
    return report


def contiguous_batches(known: list[str], wanted: list[str], per_run: int) -> list[list[str]]:
    """``wanted`` as contiguous ranges of the instance's key order, at most ``per_run`` keys each."""
    position = {k: i for i, k in enumerate(known)}
    batches: list[list[str]] = []
    for key in wanted:
        if batches and len(batches[-1]) < per_run and position[key] == position[batches[-1][-1]] + 1:
            batches[-1].append(key)
        else:
            batches.append([key])
    return batches


RUNS_PER_WORKER = 2  # with worker processes: runs small enough that the workers stay evenly loaded to the end


def balanced_batches(known: list[str], wanted: list[str], per_run: int, workers: int) -> list[list[str]]:
    """``wanted`` as contiguous ranges for ``workers`` processes: a multiple of ``workers`` runs of equal size (within one
    partition, the larger first), each at most ``per_run`` keys and about ``RUNS_PER_WORKER`` per worker.

    Seven runs of three partitions on two workers would leave one worker idle for the whole last run; eight runs of
    three and two keep both busy to the end. A gap in ``wanted`` also ends a run (a run covers one contiguous range),
    so gaps (``only_missing``) give more, uneven runs; fewer keys than planned runs give one run per key.
    """
    n = len(wanted)
    if n == 0:
        return []
    rounds = max(math.ceil(n / (workers * per_run)), min(RUNS_PER_WORKER, math.ceil(n / workers)))
    runs = min(n, workers * rounds)
    sizes = [n // runs + (1 if i < n % runs else 0) for i in range(runs)]
    position = {k: i for i, k in enumerate(known)}
    batches: list[list[str]] = []
    remaining = iter(sizes)
    limit = next(remaining)
    for key in wanted:
        if batches and len(batches[-1]) < limit and position[key] == position[batches[-1][-1]] + 1:
            batches[-1].append(key)
            continue
        if batches and len(batches[-1]) >= limit:  # a full run: the next one gets the next size
            limit = next(remaining, limit)
        batches.append([key])
    return batches


def _execute(job: dg.JobDefinition, instance: dg.DagsterInstance, batch: list[str] | None, log_level: str) -> tuple[str, list[str]]:
    """One run over a contiguous range of partitions (None: an unpartitioned job); returns its id and its failed checks."""
    tags = {}
    if batch is not None:
        tags = {RANGE_START: batch[0], RANGE_END: batch[-1]} if len(batch) > 1 else {"dagster/partition": batch[0]}
    result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=True, run_config=_log_config(log_level))
    return result.run_id, failed_checks(result)


def failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    """``asset:check`` of every check a run failed, with its severity when only a warning, and its own description of why."""
    out = []
    for ev in result.get_asset_check_evaluations():
        if ev.passed:
            continue
        said = [s for s in ("warning" if ev.severity == dg.AssetCheckSeverity.WARN else "", ev.description or "") if s]
        out.append(f"{ev.asset_key.to_user_string()}:{ev.check_name}" + (f" ({': '.join(said)})" if said else ""))
    return out


_WORKER: dict = {}


def _worker_init(env: dict[str, str], instance_ref) -> None:
    from charassets.definitions import build_definitions

    # at exit (one exit handler among the others, which still run): what the worker made stays out of the
    # interpreter's last garbage collections, which would walk all of it (a worker's exit after one prepare run,
    # measured: 1.3 -> 0.2 s)
    atexit.register(gc.freeze)
    _WORKER["defs"] = build_definitions(env)
    _WORKER["instance"] = dg.DagsterInstance.from_ref(instance_ref)


def _worker_run(job_name: str, batch: list[str] | None, log_level: str) -> dict:
    try:
        run_id, failed = _execute(_WORKER["defs"].resolve_job_def(job_name), _WORKER["instance"], batch, log_level)
        error = None
    except Exception as e:  # reported to the parent, which fails after the other batches finish
        run_id, failed, error = None, [], f"{type(e).__name__}: {e}"
    return {
        "run_id": run_id,
        "failed": failed,
        "error": error,
        "pid": os.getpid(),
        "peak_rss_mb": peak_rss_mb(),
    }


THREAD_VARIABLES = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# polars' allocator (jemalloc) in a worker: freed pages kept 5 s before they go back to the system, instead of polars'
# 0.5-1 s, so each partition reuses the pages the last one freed instead of faulting fresh ones in (a worker's loop over
# 8 partitions, measured: 0.57 M page faults -> 0.25 M, system CPU 1.26 -> 0.54 s, wall -7%; peak RSS +60 MB; in
# 1M-record builds, alternating: labels' step time 18.7-19.5 -> 16.9-17.5 s, all steps 106-113 -> 103-106 s).
# Polars appends this to its own setting (later options win). Importing polars writes its own setting into this
# process's environment, which workers would inherit (in a process whose parent imported polars, twice over): a
# value made only of polars' own options is replaced, any other (the user's) kept.
ALLOCATOR_VARIABLE, WORKER_ALLOCATOR = "_RJEM_MALLOC_CONF", "dirty_decay_ms:5000,muzzy_decay_ms:5000"
POLARS_OWN_ALLOCATOR = "dirty_decay_ms:500,muzzy_decay_ms:1000"


def worker_allocator(current: str | None) -> str:
    """A worker's allocator setting: ``WORKER_ALLOCATOR``, unless ``current`` holds an option polars did not write itself."""
    return WORKER_ALLOCATOR if set((current or "").split(",")) <= {"", *POLARS_OWN_ALLOCATOR.split(",")} else current


@contextmanager
def _worker_pool(workers: int, instance: dg.DagsterInstance, env: Mapping[str, str]) -> Iterator[ProcessPoolExecutor]:
    """Fresh worker processes, each building its definitions from ``env`` and opening ``instance`` by reference.

    Each worker gets its share of the cores for its polars and torch thread pools (unless the
    environment already sets them): two workers with a pool of every core each would make
    four threads contend for two cores. The variables must be in the environment when a worker
    starts (polars reads its own once, at import), which is at a submit: submit inside the block.
    """
    ref = instance.get_ref()  # raises for an ephemeral instance: workers need a shared, persistent one
    with _spawned(workers, env, _worker_init, (dict(env), ref)) as pool:
        yield pool


@contextmanager
def _spawned(workers: int, env: Mapping[str, str], initializer: Callable[..., None], initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """``workers`` spawned processes, each started with its share of the cores for its polars and torch threads."""
    ctx = multiprocessing.get_context("spawn")  # no forked torch / Rust thread pools
    share = str(max(1, (os.cpu_count() or 1) // workers))
    saved = {k: os.environ.get(k) for k in (*THREAD_VARIABLES, ALLOCATOR_VARIABLE)}
    os.environ.update({k: env.get(k) or share for k in THREAD_VARIABLES})
    os.environ[ALLOCATOR_VARIABLE] = worker_allocator(env.get(ALLOCATOR_VARIABLE))
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
    try:
        yield pool
    finally:
        # on success the callers hold every result here, and the workers' exit (interpreter teardown) overlaps
        # what comes next; on an error, runs not started are cancelled and the ones running finish on their own
        pool.shutdown(wait=False, cancel_futures=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _helpers(helpers: int, env: Mapping[str, str]) -> Iterator[ProcessPoolExecutor | None]:
    """``helpers`` spawned processes for the heads' fits and the report's scans (none below two), started now: they
    import what a fit needs while this process makes the partition runs."""
    if helpers < 2:
        yield None
        return
    from charassets.domain.models.fitting import ready_helper

    with _spawned(helpers, env, ready_helper) as pool:
        for _ in range(helpers):  # a worker starts at a submit
            pool.submit(int)
        yield pool


def _note_worker(report: RunReport, out: dict) -> None:
    """Keep the highest peak RSS each worker process reported."""
    report.worker_peak_rss_mb[out["pid"]] = round(max(out["peak_rss_mb"], report.worker_peak_rss_mb.get(out["pid"], 0.0)))


def _run_in_workers(instance, batches, job_name, log_level, workers, env, report: RunReport, pool=None, meanwhile=None) -> None:
    errors = []
    with _worker_pool(workers, instance, env) if pool is None else nullcontext(pool) as pool:
        futures = [(batch, pool.submit(_worker_run, job_name, batch, log_level)) for batch in batches]
        if meanwhile is not None:
            meanwhile()
        for batch, future in futures:
            out = future.result()
            _note_worker(report, out)
            if out["error"]:
                errors.append(f"{batch[0]}..{batch[-1]}: {out['error']}")
                continue
            report.runs.append(out["run_id"])
            report.failed_checks += out["failed"]
            report.partitions += batch
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(batches)} runs failed; first: {errors[0]}")


def heads_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata of ``models/attribute_heads`` from a training run."""
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["models", "attribute_heads"])]
    return event.materialization.metadata


def train(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    log_level: str = "INFO",
    run_config: dict | None = None,
    assets: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run ``train_heads`` (every materialized partition feeds it); ``assets``: only these of its assets."""
    config = {**_log_config(log_level), **(run_config or {})}
    return defs.resolve_job_def("train_heads").execute_in_process(
        instance=instance, run_config=config, raise_on_error=True, asset_selection=assets
    )


@dataclass
class BuildReport:
    prepared: RunReport
    trained: dg.ExecuteInProcessResult
    published: RunReport
    seconds: dict[str, float]
    parent_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    profiles_failed_checks: list[str] = field(default_factory=list)  # when a worker built the profiles
    profiles_run_id: str | None = None  # the worker's build_profiles run, when there was one

    @property
    def training_run_ids(self) -> list[str]:
        """The training phase's Dagster runs: the heads' run, and the profiles' run when a worker built them."""
        return [self.trained.run_id] + ([self.profiles_run_id] if self.profiles_run_id else [])

    @property
    def failed_checks(self) -> list[str]:
        return self.prepared.failed_checks + failed_checks(self.trained) + self.profiles_failed_checks + self.published.failed_checks


def build_everything(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    log_level: str = "INFO",
    per_run: int = PARTITIONS_PER_RUN,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    helpers: int = 0,
) -> BuildReport:
    """A full build: per-record assets up to labels and embeddings, then heads and profiles, then the final table once.

    With ``workers>1`` the same worker processes run the prepare and the publish runs (each
    start costs imports and definitions, ~5 s of a core); while this process trains the heads they
    build the character profiles and fit the heads (``fitting``), and they make the dataset report's
    scans (``report.figures``) and charts (``report.render``) for the report this process writes.

    With the runs made here (``workers=1``, the demo), ``helpers>=2`` starts that many lighter processes (no Dagster
    definitions: torch, the fitting and report code, ~3 CPU-s each, while this process prepares) and lends them the
    fits, the report's scans and charts, and the creation of a new model store's tables. The demo, measured: 24-26 ->
    22.5-23 s; its tables, heads and report are the ones a build without helpers makes.
    """
    peak: dict[str, float] = {}  # this process's peak RSS (MB) once each phase is done: which phase raised it
    env = env if env is not None else os.environ
    shared = _worker_pool(workers, instance, env) if workers > 1 and instance.is_persistent else None
    with shared if shared is not None else nullcontext() as pool, _helpers(0 if shared is not None else helpers, env) as helping:
        parallel = {"workers": workers, "env": env, "per_run": per_run, "log_level": log_level, "pool": pool}
        spare, width = (pool, workers) if pool is not None else (helping, helpers)  # what training and the report may use
        # a helper creates a new model store's tables while this process makes the prepare runs (a separate process:
        # MLflow's and Dagster's sqlite stores are both set up through alembic, whose module-level state one process's
        # threads cannot share)
        store_tables = helping.submit(defs.resources["mlflow_store"].store().create_tables) if helping is not None else None  # type: ignore[union-attr]
        t0 = time.perf_counter()
        # while the workers prepare, this process would only wait: it opens the model store and imports what scoring
        # and logging heads need (MLflow's sqlite tables, scikit-learn, matplotlib, MLflow's pyfunc and its map of
        # installed packages: ~3 CPU-s that training would otherwise wait for), in the cycles the workers leave idle
        with in_idle_time(_ready_for_training(defs) if pool is not None else []) as ready:
            prepared = run_partitions(defs, instance, job_name="prepare_records", meanwhile=ready, **parallel)
        peak["prepare"] = peak_rss_mb()
        t1 = time.perf_counter()
        profiles_failed: list[str] = []
        profiles_run: str | None = None
        if pool is not None:  # the workers build the character profiles and fit the heads this process samples and scores
            # (profiles and heads are independent assets: a failure of one does not stop the other; either fails the build)
            profiles = pool.submit(_worker_run, "build_profiles", None, log_level)
            try:
                with lending(pool, workers):
                    trained = train(defs, instance, log_level=log_level, assets=HEADS)
            finally:
                side = profiles.result()  # never leave it writing to the lake unattended
            if side["error"]:
                raise RuntimeError(f"building character profiles failed: {side['error']}")
            profiles_failed, profiles_run = side["failed"], side["run_id"]
            _note_worker(prepared, side)
        else:
            if store_tables is not None:
                store_tables.result()
            with lending(spare, width):
                trained = train(defs, instance, log_level=log_level)
        peak["train"] = peak_rss_mb()
        t2 = time.perf_counter()
        published = run_partitions(defs, instance, job_name="publish", register_first=False, **parallel)
        peak["publish"] = peak_rss_mb()
        t3 = time.perf_counter()
        seconds = {"prepare_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1), "publish_s": round(t3 - t2, 1)}
        lake = defs.resources["lake"].lake()  # type: ignore[union-attr]
        if lake.exists("raw", "images"):  # text-only data has nothing to deduplicate (its view would be a copy)
            defs.resolve_job_def("deduplicate").execute_in_process(
                instance=instance, run_config=_log_config(log_level), raise_on_error=True
            )
            seconds["deduplicate_s"] = round(time.perf_counter() - t3, 1)
            peak["deduplicate"] = peak_rss_mb()
        t4 = time.perf_counter()
        with lending(spare, width):  # the report's scans in the workers or helpers, when there are some
            build_report(defs, instance, log_level)
        peak["report"] = peak_rss_mb()
        seconds["report_s"] = round(time.perf_counter() - t4, 1)
        if pool is not None:  # the workers' peaks over their whole life, the report's scans included
            for pid in {**prepared.worker_peak_rss_mb, **published.worker_peak_rss_mb}:
                published.worker_peak_rss_mb[pid] = round(max(published.worker_peak_rss_mb.get(pid, 0.0), process_peak_rss_mb(pid)))
    return BuildReport(prepared, trained, published, seconds, peak, profiles_failed, profiles_run)


@contextmanager
def in_idle_time(steps: Sequence[Callable[[], object]]) -> Iterator[Callable[[], None] | None]:
    """Yields ``start``: once called, ``steps`` run one after another in a thread of this process at the lowest CPU
    priority. When the block ends (or raises) the thread finishes the step it is on and stops; on success the steps
    it did not reach then run here, at this thread's priority, and an error in a step is raised.

    Beside worker processes that keep every core busy, the thread takes the cycles they leave (a worker waiting on
    a write, one finishing before the other) instead of a share of the cores they need. On Linux the nice value
    is a thread's own (``setpriority`` on its id); elsewhere it is an ordinary thread. An unprivileged thread
    cannot take its priority back: what is left when the block ends is done here rather than waited for at nice 19
    (on a machine other programs keep busy, that wait could be long). Yields None when there are no steps.
    """
    if not steps:
        yield None
        return
    left, stop, failed = deque(steps), threading.Event(), []

    def run() -> None:
        if sys.platform == "linux":  # elsewhere a nice value is the process's: an ordinary thread
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            while left and not stop.is_set():
                left.popleft()()
        except BaseException as e:  # noqa: BLE001
            failed.append(e)

    thread = threading.Thread(target=run, name="idle-time", daemon=True)
    try:
        yield thread.start
    finally:  # also when the block raised: no step is left half done, nor runs beside what comes next
        stop.set()
        if thread.ident is not None:
            thread.join()
    if failed:
        raise failed[0]
    while left:
        left.popleft()()


def _ready_for_training(defs: dg.Definitions) -> list[Callable[[], object]]:
    """What training in this process will need first, done ahead, as steps: the model store opened (a new sqlite
    store's tables created), scikit-learn imported, then matplotlib and MLflow ready to log a model."""
    from charassets.domain.models.metrics import import_sklearn

    def ready_to_log() -> None:
        from charassets.domain.models.registry import ready_to_log
        from charassets.domain.models.training import import_plotting

        try:  # only a head start: training does the same on its own if this fails
            import_plotting()
            ready_to_log()
        except Exception as e:  # noqa: BLE001
            logging.getLogger(__name__).warning(f"readying the first head's log failed (training will do it): {e}")

    return [defs.resources["mlflow_store"].store().create_tables, import_sklearn, ready_to_log]  # type: ignore[union-attr]


def build_report(defs: dg.Definitions, instance: dg.DagsterInstance, log_level: str = "INFO") -> str:
    """Materialize ``reports/dataset_report``; returns the HTML file's URI."""
    result = defs.resolve_job_def("report").execute_in_process(instance=instance, run_config=_log_config(log_level), raise_on_error=True)
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["reports", "dataset_report"])]
    return str(event.materialization.metadata["html"].value)
