"""MLflow for attribute heads: one run per training, one registered model per attribute, a ``champion`` alias.

``ModelStore`` is bound to one tracking URI (an ``MlflowClient`` of its own): nothing here
points the process's MLflow at a store, except the few lines of ``log_head`` that MLflow's
``log_model`` needs, which set the URI for that call only and restore it.

Heads are logged as an MLflow "model from code" (``pyfunc.py``) whose artifacts are
safetensors weights and a JSON config; nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from charassets.domain.models.heads import TrainedHead

CHAMPION = "champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
PIP_REQUIREMENTS = ["charassets", "mlflow", "torch", "safetensors", "pandas", "numpy"]


def model_name(field_key: str) -> str:
    return f"charassets-head-{field_key.replace('_', '-')}"


@dataclass
class LoggedHead:
    run_id: str
    version: str
    name: str


class ModelStore:
    """The heads' MLflow tracking store and model registry at ``tracking_uri``; runs go to ``experiment``."""

    def __init__(self, tracking_uri: str, experiment: str | None = None, artifact_root: str | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri, self.experiment, self.artifact_root = tracking_uri, experiment, artifact_root

    @cached_property
    def client(self) -> MlflowClient:
        """The store's client, opened on first use (a new sqlite store's tables take 2-3 s to create: training
        opens it once its first head is fitted, while the others are still fitting)."""
        _init_sqlite_store(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def create_tables(self) -> None:
        """Create a new sqlite store's tables now (once per process; the first use would otherwise)."""
        _init_sqlite_store(self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment runs are logged to, created (at ``artifact_root``) on first use."""
        if self.experiment is None:
            raise ValueError("this model store has no experiment: it can read heads, not log them")
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_root)

    def log_head(
        self, head: TrainedHead, field_key: str, params: dict, metrics: dict[str, float], tags: dict[str, str], files: dict[str, str]
    ) -> LoggedHead:
        """One MLflow run: params, metrics, report/plot files, the head (registered as a new version)."""
        from mlflow.tracking.context.registry import resolve_tags  # what ``mlflow.start_run`` records (user, source)

        name, client = model_name(field_key), self.client
        run_name = f"{field_key}-head"
        run = client.create_run(self.experiment_id(), run_name=run_name, tags=resolve_tags({"mlflow.runName": run_name}))
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag(k, str(v)) for k, v in tags.items()],
            )
            for path in files.values():
                client.log_artifact(run_id, path, artifact_path="evaluation")
            with tempfile.TemporaryDirectory() as tmp:
                head_dir = head.save(Path(tmp) / "head")
                client.log_artifacts(run_id, str(head_dir), artifact_path="head_files")
                # ``log_model`` logs to the active run through the process-wide URI, and MLflow's sqlite registry
                # resolves a ``models:/<model id>`` source through it too (a TODO in its SqlAlchemyStore)
                with self.bound():
                    with mlflow.start_run(run_id=run_id):  # on exit: the run is FINISHED
                        info = _log_pyfunc(head_dir)
                    self._ensure_registered(name)
                    version = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        return LoggedHead(run_id, str(version.version), name)

    def _ensure_registered(self, name: str) -> None:
        try:
            self.client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise

    @contextmanager
    def bound(self) -> Iterator[None]:
        """MLflow's fluent API (``log_model``, ``mlflow.pyfunc.load_model("models:/...")``) reads the process-wide
        tracking URI: point it at this store for one block, then restore it (and ``MLFLOW_TRACKING_URI``,
        which ``mlflow.set_tracking_uri`` also writes)."""
        from mlflow.tracking._tracking_service import utils

        before, env = getattr(utils, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env

    def champion(self, field_key: str) -> tuple[str, str] | None:
        """(version, run_id) of the current champion, if any."""
        try:
            mv = self.client.get_model_version_by_alias(model_name(field_key), CHAMPION)
        except MlflowException:
            return None
        return str(mv.version), mv.run_id

    def champion_tags(self, field_key: str) -> dict[str, str]:
        """The current champion version's tags (empty when there is none)."""
        try:
            return dict(self.client.get_model_version_by_alias(model_name(field_key), CHAMPION).tags)
        except MlflowException:
            return {}

    def champion_report(self, field_key: str) -> dict | None:
        """The champion's evaluation report (metrics with per-class figures, baselines, label counts), if any."""
        champ = self.champion(field_key)
        if champ is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(champ[1], "evaluation/report.json", dst_path=tmp)
            except (OSError, MlflowException):
                return None
            return json.loads(Path(path).read_text())

    def load_head(self, run_id: str) -> TrainedHead:
        """The head of a run, from its safetensors files."""
        with tempfile.TemporaryDirectory() as tmp:
            return TrainedHead.load(self.client.download_artifacts(run_id, "head_files", dst_path=tmp))

    def promote(self, field_key: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name(field_key), CHAMPION, version)

    def record_comparison(self, field_key: str, version: str, comparison: dict) -> None:
        for k, v in comparison.items():
            self.client.set_model_version_tag(model_name(field_key), version, k, json.dumps(v) if not isinstance(v, str) else v)

    def versions(self, field_key: str | None = None) -> list[dict]:
        """Every registered head version with its run's metrics and data tags, newest first."""
        client = self.client
        names = (
            [model_name(field_key)]
            if field_key
            else [m.name for m in client.search_registered_models() if m.name.startswith("charassets-head-")]
        )
        rows = []
        for name in names:
            try:
                champ = client.get_model_version_by_alias(name, CHAMPION).version
            except MlflowException:
                champ = None
            for mv in client.search_model_versions(f"name='{name}'"):
                run = client.get_run(mv.run_id)
                rows.append(
                    {
                        "model": name,
                        "version": int(mv.version),
                        "champion": mv.version == champ,
                        "run_id": mv.run_id,
                        "metrics": run.data.metrics,
                        "tags": {k: v for k, v in mv.tags.items()},
                    }
                )
        return sorted(rows, key=lambda r: (r["model"], -r["version"]))


def _log_pyfunc(head_dir: Path):
    """The head as an MLflow model from code, logged to the active run.

    MLflow loads ``pyfunc.py`` to log it; its class opts out of type-hint validation, so no warning
    ("Add type hints to the `predict` method") is raised, once per head, on the way.
    """
    return mlflow.pyfunc.log_model(
        name="model", python_model=str(PYFUNC_CODE), artifacts={"head": str(head_dir)}, pip_requirements=PIP_REQUIREMENTS
    )


def ready_to_log() -> None:
    """What a process's first logged head pays once, paid now: MLflow's pyfunc flavour imported, and its map of the
    installed packages built (logging a model checks the model's requirements against it: ~0.35 s to build).

    A build with worker processes calls this while the workers prepare, so the first head is logged as fast as the
    others (with ``training.import_plotting``, measured: the first head's log 1.4 -> 0.3-0.4 s).
    """
    import mlflow.pyfunc  # noqa: F401

    try:  # MLflow's own cache (a private function of the pinned MLflow): without it, the first log builds the map itself
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map
    except ImportError:
        return
    _init_packages_to_modules_map()


_INITIALIZED: set[str] = set()


def _init_sqlite_store(tracking_uri: str) -> None:
    """Create (migrate) a sqlite store under an exclusive file lock.

    Runs in several processes may open a new store at the same moment, and MLflow's schema
    migration is not safe to run twice at once (a column gets added twice); a server store
    (Postgres) is migrated by ``mlflow server`` / ``mlflow db upgrade`` instead.
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _INITIALIZED:
        return
    import fcntl

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _INITIALIZED.add(tracking_uri)


# For scripts and tests written against the module functions: they read the process's default MLflow
# store (``configure`` points it somewhere). The pipeline never calls them: it uses a ``ModelStore``.


def configure(tracking_uri: str, experiment: str | None = None, artifact_root: str | None = None) -> ModelStore:
    """Point the process's default MLflow at a store (and create ``experiment``); returns that store."""
    store = ModelStore(tracking_uri, experiment, artifact_root)
    mlflow.set_tracking_uri(tracking_uri)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=store.experiment_id())
    return store


def _default() -> ModelStore:
    return ModelStore(mlflow.get_tracking_uri())


def champion(field_key: str) -> tuple[str, str] | None:
    return _default().champion(field_key)


def champion_tags(field_key: str) -> dict[str, str]:
    return _default().champion_tags(field_key)


def champion_report(field_key: str) -> dict | None:
    return _default().champion_report(field_key)


def load_head(run_id: str) -> TrainedHead:
    return _default().load_head(run_id)


def versions(field_key: str | None = None) -> list[dict]:
    return _default().versions(field_key)
