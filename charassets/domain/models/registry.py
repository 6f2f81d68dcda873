"""MLflow for attribute heads: one run per training, one registered model per attribute, a ``champion`` alias.

Heads are logged as an MLflow "model from code" (``pyfunc.py``) whose artifacts are
safetensors weights and a JSON config; nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from charassets.domain.models.heads import TrainedHead

CHAMPION = "champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")


def model_name(field_key: str) -> str:
    return f"charassets-head-{field_key.replace('_', '-')}"


@dataclass
class LoggedHead:
    run_id: str
    version: str
    name: str


def configure(tracking_uri: str, experiment: str | None = None, artifact_root: str | None = None) -> None:
    """Point MLflow at a store; with an experiment name, create and select it (for logging runs)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _init_sqlite_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    if experiment is None:
        return
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_root)
    mlflow.set_experiment(experiment)


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


def log_head(
    head: TrainedHead, field_key: str, params: dict, metrics: dict[str, float], tags: dict[str, str], files: dict[str, str]
) -> LoggedHead:
    """One MLflow run: params, metrics, report/plot files, the head (registered as a new version)."""
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name=f"{field_key}-head") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags)
        for path in files.values():
            mlflow.log_artifact(path, artifact_path="evaluation")
        head_dir = head.save(Path(tmp) / "head")
        mlflow.log_artifacts(str(head_dir), artifact_path="head_files")
        with warnings.catch_warnings():  # the model takes a plain array; no typed signature is wanted
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"head": str(head_dir)},
                pip_requirements=["charassets", "mlflow", "torch", "safetensors", "pandas", "numpy"],
            )
        version = mlflow.register_model(info.model_uri, model_name(field_key), tags=tags)
        return LoggedHead(run.info.run_id, str(version.version), model_name(field_key))


def champion(field_key: str) -> tuple[str, str] | None:
    """(version, run_id) of the current champion, if any."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name(field_key), CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    return str(mv.version), mv.run_id


def champion_tags(field_key: str) -> dict[str, str]:
    """The current champion version's tags (empty when there is none)."""
    try:
        return dict(MlflowClient().get_model_version_by_alias(model_name(field_key), CHAMPION).tags)
    except mlflow.exceptions.MlflowException:
        return {}


def champion_report(field_key: str) -> dict | None:
    """The champion's evaluation report (metrics with per-class figures, baselines, label counts), if any."""
    champ = champion(field_key)
    if champ is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=champ[1], artifact_path="evaluation/report.json", dst_path=tmp)
        except (OSError, mlflow.exceptions.MlflowException):
            return None
        return json.loads(Path(path).read_text())


def load_head(run_id: str) -> TrainedHead:
    """The head of a run, from its safetensors files."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="head_files", dst_path=tmp)
        return TrainedHead.load(path)


def promote(field_key: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(model_name(field_key), CHAMPION, version)


def record_comparison(field_key: str, version: str, comparison: dict) -> None:
    client = MlflowClient()
    for k, v in comparison.items():
        client.set_model_version_tag(model_name(field_key), version, k, json.dumps(v) if not isinstance(v, str) else v)


def versions(field_key: str | None = None) -> list[dict]:
    """Every registered head version with its run's metrics and data tags, newest first."""
    client = MlflowClient()
    names = (
        [model_name(field_key)]
        if field_key
        else [m.name for m in client.search_registered_models() if m.name.startswith("charassets-head-")]
    )
    rows = []
    for name in names:
        try:
            champ = client.get_model_version_by_alias(name, CHAMPION).version
        except mlflow.exceptions.MlflowException:
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
