"""The production profile, as far as it runs here: Dagster on Postgres, MLflow server on Postgres, the compose stack.

A real PostgreSQL server (Debian's ``postgresql``; ``.ci/run`` installs it when missing)
is started on 127.0.0.1 for this module. Dagster's instance is loaded from the stack's own
``docker/dagster.yaml`` (Postgres storage, queued runs, Docker run launcher), and a real
``mlflow server`` runs with a Postgres backend store. Object storage (MinIO) and the
Docker engine do not exist here: the compose file is checked for structure instead.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from charassets.definitions import build_definitions
from charassets.domain.demo import generate
from charassets.domain.lake import Lake
from charassets.runner import heads_metadata, run_partitions, train
from charassets_tests.conftest import free_port as _free_port
from charassets_tests.conftest import server as _server

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 with databases ``dagster`` and ``mlflow``."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql; .ci/run does this)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    base = Path(tempfile.mkdtemp(prefix="charassets-pg-"))
    data = base / "data"
    if as_user:
        shutil.chown(base, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True)  # noqa: E731
    run(bindir / "initdb", "-D", data, "-U", "charassets", "--auth=trust", "-E", "UTF8")
    run(bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="charassets", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield {"host": "127.0.0.1", "port": port, "user": "charassets"}
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` with its backend store in Postgres and artifacts served from a local folder."""
    port = _free_port()
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    store = f"postgresql+psycopg2://{postgres['user']}@{postgres['host']}:{postgres['port']}/mlflow"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    cmd = [mlflow_bin, "server", "--backend-store-uri", store, "--artifacts-destination", str(artifacts)]
    url = f"http://127.0.0.1:{port}"
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with _server(cmd, lambda: urllib.request.urlopen(f"{url}/health", timeout=2), "mlflow server", 120, env):
        yield url


@pytest.fixture
def stack_env(postgres, monkeypatch):
    """The environment docker/dagster.yaml reads, pointed at the local Postgres."""
    values = {
        "DAGSTER_PG_HOST": postgres["host"],
        "DAGSTER_PG_PORT": str(postgres["port"]),
        "DAGSTER_PG_USER": postgres["user"],
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_MAX_CONCURRENT_RUNS": "4",
        "CHARASSETS_IMAGE": "charassets:test",
        "DAGSTER_DOCKER_NETWORK": "charassets",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def test_pipeline_on_postgres_instance_and_mlflow_server(stack_env, mlflow_server, tmp_path):
    """Prepare with two worker processes, train, publish: runs and events in Postgres, models in the MLflow server."""
    from dagster_docker import DockerRunLauncher
    from dagster_postgres import PostgresRunStorage
    from mlflow import MlflowClient

    sources = generate(tmp_path / "demo", n=3000, rows_per_partition=500)
    env = {
        **os.environ,
        "CHARASSETS_SOURCES": str(sources),
        "CHARASSETS_LAKE": str(tmp_path / "lake"),
        "CHARASSETS_HOME": str(tmp_path),
        "CHARASSETS_EMBEDDER": "hashing:64",
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    defs = build_definitions(env)
    with dg.DagsterInstance.from_config(str(DOCKER)) as instance:  # the stack's own instance config
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_launcher, DockerRunLauncher)
        prepared = run_partitions(defs, instance, log_level="WARNING", job_name="prepare_records", workers=2, env=env)
        trained = train(defs, instance, log_level="WARNING")
        published = run_partitions(defs, instance, log_level="WARNING", job_name="publish", register_first=False, workers=2, env=env)
        run_ids = {r.run_id for r in instance.get_runs()}
        assert {*prepared.runs, trained.run_id, *published.runs} <= run_ids
        assert all(instance.get_run_by_id(r).is_success for r in [*prepared.runs, *published.runs])
        keys = instance.get_dynamic_partitions("record_chunks")
        final = dg.AssetKey(["marts", "character_attributes"])
        assert instance.get_materialized_partitions(final) == set(keys) and len(keys) == 7
    macro_f1 = heads_metadata(trained)["macro_f1"].value
    client = MlflowClient(mlflow_server)
    registered = {m.name for m in client.search_registered_models()}
    assert len(registered) == len(macro_f1) >= 4  # every trained head is a registered model in the Postgres-backed server
    assert all(client.get_model_version_by_alias(name, "champion") for name in registered)
    lake = Lake(env["CHARASSETS_LAKE"])
    table = lake.read("marts", "character_attributes")
    assert table.height == int(lake.read("raw", "source_partitions").get_column("row_count").sum())
    # publishing applied the champions fetched from the MLflow server to every record
    predictions = lake.read("models", "head_predictions")
    used = {
        predictions.get_column(c).struct.field("model").unique().item() for c in predictions.columns if c not in ("record_id", "partition")
    }
    assert 0 < predictions.height <= lake.read("raw", "records").height  # records with a gap to fill, and a calibration sample
    # every champion whose field's fill policy allows a text head (Age, Ethnicity and the list fields do not)
    from charassets.domain.models.registry import model_name
    from charassets.domain.ontology import Ontology

    allowed = {model_name(f.key) for f in Ontology.load().fields if "head" in f.fill}
    assert {u.split("@")[0] for u in used} == registered & allowed


def test_compose_stack_is_complete_and_configured_by_environment_only():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "buckets", "mlflow", "charassets-code", "dagster-webserver", "dagster-daemon"} <= set(services)
    documented = set(re.findall(r"^([A-Z_]+)=", (DOCKER / ".env.example").read_text(), re.M))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)", (DOCKER / "compose.yaml").read_text()))  # $${X}: the container's own
    assert used <= documented, f"variables without a documented value: {used - documented}"
    for name, svc in services.items():
        assert "image" in svc, name
        if ":" in svc["image"] and not svc["image"].startswith("$"):
            assert not svc["image"].endswith(":latest"), f"{name}: pin the image"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        cond = svc.get("depends_on", {})
        for dep, spec in cond.items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: publish on loopback only"
    app = services["charassets-code"]["environment"]
    assert app["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and app["CHARASSETS_LAKE"].startswith("s3://")
    assert "postgresql+psycopg2://" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    for svc in ("charassets-code", "mlflow"):
        build = services[svc]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()
    # every file the Dockerfile copies exists, and the instance config forwards what runs need
    for src in re.findall(r"^COPY (\S+)", (DOCKER / "Dockerfile").read_text(), re.M):
        assert (ROOT / src).exists(), src
    forwarded = set(yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["env_vars"])
    needed = {k for k in app if k.startswith(("CHARASSETS_", "MLFLOW_", "AWS_", "DAGSTER_PG_"))} - {"CHARASSETS_IMAGE"}
    assert needed <= forwarded, f"not forwarded to run containers: {needed - forwarded}"


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3 API on 127.0.0.1: moto's server, standing in for the cloud service (MinIO in the stack)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    create_bucket = lambda: urllib.request.urlopen(urllib.request.Request(f"{url}/lake", method="PUT"), timeout=2)  # noqa: E731
    with _server(cmd, create_bucket, "moto_server", 60):
        yield url


def test_whole_build_with_the_lake_on_object_storage(s3_endpoint, tmp_path, monkeypatch):
    """Delta tables and side files on an S3 API through storage options only; two workers commit concurrently;
    the dataset report's scans made in the workers give the figures this process computes alone."""
    import json

    import fsspec

    from charassets import runner
    from charassets.domain.report import figures as report_figures

    # what the report saw lent, and whose peak memory the build read from the live process
    lent_to_report, peaks_read, lent_here = [], [], report_figures.lent
    monkeypatch.setattr(report_figures, "lent", lambda: lent_to_report.append(lent_here()) or lent_to_report[-1])
    monkeypatch.setattr(runner, "process_peak_rss_mb", lambda pid: peaks_read.append(pid) or 123456.0)

    from charassets.domain.lake import fsspec_options
    from charassets.runner import build_everything

    options = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "aws_conditional_put": "etag",  # as for MinIO in docker/compose.yaml
    }
    sources = generate(tmp_path / "demo", n=3000, rows_per_partition=500, malformed_rate=0.01)
    env = {
        **os.environ,
        "CHARASSETS_SOURCES": str(sources),
        "CHARASSETS_LAKE": "s3://lake/charassets",
        "CHARASSETS_STORAGE_OPTIONS": json.dumps(options),
        "CHARASSETS_HOME": str(tmp_path),
        "CHARASSETS_EMBEDDER": "hashing:64",
    }
    defs = build_definitions(env)
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        build = build_everything(defs, instance, log_level="WARNING", workers=2, env=env)
        profiles_run = instance.get_run_by_id(build.profiles_run_id) if build.profiles_run_id else None
    assert not build.failed_checks and len(build.prepared.worker_peak_rss_mb) == 2
    lake = Lake("s3://lake/charassets", options)
    expected = dict(lake.read("raw", "source_partitions").select("partition", "row_count").iter_rows())
    assert lake.partition_counts("marts", "character_attributes") == expected  # every row, once, on S3
    fs = fsspec.filesystem("s3", **fsspec_options(lake.root, options))
    assert len(fs.glob("lake/charassets/exports/character_attributes/jsonl/*.jsonl.gz")) == len(expected)
    assert fs.exists("lake/charassets/exports/character_attributes/schema.json")
    assert fs.exists("lake/charassets/reports/dataset_report.html")
    from charassets.domain.ontology import Ontology
    from charassets.domain.report import dataset_figures, figures_json

    written = json.loads(fs.cat("lake/charassets/reports/dataset_report.json"))
    here = json.loads(figures_json(dataset_figures(lake, Ontology.load(), written["long_tail"]["heads"])))
    assert written["fields"] and written["examples"] and written["long_tail"]["tags"]["distinct"]
    assert {k: v for k, v in written.items() if k != "generated_at"} == {k: v for k, v in here.items() if k != "generated_at"}
    # the report's scans were lent the workers; each worker's peak memory is read from the live process afterwards
    assert len(lent_to_report) == 2 and lent_to_report[0][0] is not None  # the build's report; then this test's, alone
    assert lent_to_report[1] == (None, 1)
    workers_read = [pid for pid in peaks_read if pid != "self"]  # (this process's own peaks are read the same way)
    assert sorted(workers_read) == sorted(build.prepared.worker_peak_rss_mb) and len(workers_read) == 2
    assert all(mb == 123456 for mb in build.published.worker_peak_rss_mb.values())
    # the idle workers built the profiles (their own run) and fitted the heads the parent logged
    assert profiles_run is not None and profiles_run.job_name == "build_profiles" and profiles_run.is_success
    assert lake.read("marts", "character_profiles").height > 0
    heads = heads_metadata(build.trained)
    assert heads["macro_f1"].value and not heads["skipped"].value
