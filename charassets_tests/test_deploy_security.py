"""The docker stack's hardening (SECURITY.md): secrets, object-store accounts, the image's user, MLflow auth.

No Docker engine runs here: the compose file, the Dockerfile and the instance config are read
and checked, the stack's init scripts run against stand-ins (the settings check on env files,
the object store's init job against a stub ``mc``), and a real ``mlflow server`` is started
with the stack's own command and auth configuration.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from charassets_tests.conftest import free_port, server

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
STORE_ROOT = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
SECRET = re.compile(r"PASSWORD|SECRET")
# account names the settings check also sees (length, no two alike)
ACCOUNTS = {"MINIO_ROOT_USER", "LAKE_ACCESS_KEY", "MLFLOW_ARTIFACTS_ACCESS_KEY", "MLFLOW_ADMIN_USER", "MLFLOW_RUNS_USER"}
INIT_CHECK = "check-env"  # sees every secret to judge it; no network, exits before anything starts


def _compose_text() -> str:
    return (DOCKER / "compose.yaml").read_text()


def _services() -> dict:
    return yaml.safe_load(_compose_text())["services"]


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _referenced(value) -> set[str]:
    """The compose variables ``value`` interpolates (``$${X}`` is the container's own, not one of them)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", value if isinstance(value, str) else yaml.safe_dump(value)))


def _holders(names: set[str]) -> set[str]:
    return {name for name, svc in _services().items() if names & _referenced(svc)}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _secret_names() -> set[str]:
    return {v for v in _referenced(_compose_text()) if SECRET.search(v)}


# -- secrets -------------------------------------------------------------------------------------------


def test_secrets_are_required_without_defaults_and_checked_before_anything_starts():
    text = _compose_text()
    uses = re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)([^}]*)\}", text)
    secret_names = _secret_names()
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"} <= secret_names
    for name, modifier in uses:
        if name in secret_names | ACCOUNTS:
            assert modifier.startswith(":?"), (
                f"${{{name}{modifier}}}: a secret or account must be required (${{{name}:?...}}), never defaulted"
            )
    assert not re.search(r"\$\{[A-Z_]+:?[-=][^}]*change", text, re.I), "a default of change-me"
    # the settings check runs first: it receives every secret and account, and every other service waits for it
    services = _services()
    check = services.get(INIT_CHECK)
    assert check is not None, "no settings check service: the stack would start with the example's placeholders"
    env = _env(check)
    for name in secret_names | ACCOUNTS:
        assert _referenced(env.get(name, "")) == {name}, f"{INIT_CHECK} does not receive {name}"
    assert "check-env.sh" in " ".join(check["command"])
    assert check.get("network_mode") == "none" and check.get("read_only") is True and not check.get("volumes") and not check.get("ports")
    for name, svc in services.items():
        if name != INIT_CHECK:
            assert svc.get("depends_on", {}).get(INIT_CHECK) == {"condition": "service_completed_successfully"}, f"{name} starts unchecked"


def _run_check(env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(DOCKER / "check-env.sh"), str(env_file)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30
    )


def _env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def _example() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", (DOCKER / ".env.example").read_text(), re.M))


def _good_settings() -> dict[str, str]:
    """The example with every placeholder replaced as its comment says (openssl rand -hex 20)."""
    return {k: secrets.token_hex(20) if "change-me" in v else v for k, v in _example().items()}


def test_settings_check_refuses_the_example_placeholders_and_weak_or_reused_secrets(tmp_path):
    example = _example()
    secret_names = _secret_names()
    assert secret_names <= set(example), "a secret without an example line"
    assert all("change-me" in example[name] for name in secret_names), "the example's secrets must be obvious placeholders"
    refused = _run_check(DOCKER / ".env.example")
    assert refused.returncode == 1
    for name in secret_names:
        assert f"{name} is a placeholder" in refused.stderr, name

    good = _good_settings()
    accepted = _run_check(_env_file(tmp_path / "good.env", good))
    assert accepted.returncode == 0, accepted.stderr

    names = sorted(secret_names)
    for i, name in enumerate(names):
        cases = {
            "placeholder": f"change-me-{secrets.token_hex(8)}",
            "shorter than 16": secrets.token_hex(7),
            "same as": good[names[i - 1]],
            "only letters, digits": secrets.token_hex(10) + "@/",
        }
        for reason, value in cases.items():
            result = _run_check(_env_file(tmp_path / "bad.env", {**good, name: value}))
            assert result.returncode == 1 and name in result.stderr and reason in result.stderr, (name, reason, result.stderr)
        missing = _run_check(_env_file(tmp_path / "bad.env", {k: v for k, v in good.items() if k != name}))
        assert missing.returncode == 1 and f"{name} is not set" in missing.stderr
    # a run's object-store account is not the root account
    same = _run_check(_env_file(tmp_path / "bad.env", {**good, "LAKE_ACCESS_KEY": good["MINIO_ROOT_USER"]}))
    assert same.returncode == 1 and "LAKE_ACCESS_KEY is the same account as MINIO_ROOT_USER" in same.stderr


# -- the object store's accounts -------------------------------------------------------------------------


def test_store_root_credentials_stay_with_the_store_and_its_init_job():
    assert _holders(STORE_ROOT) - {INIT_CHECK} == {"minio", "buckets"}, "the store's root account reaches other services"
    services = _services()
    assert services[INIT_CHECK].get("network_mode") == "none"  # sees the root password only to judge it
    app = _env(services["charassets-code"])
    assert _referenced(app["AWS_ACCESS_KEY_ID"]) == {"LAKE_ACCESS_KEY"} and _referenced(app["AWS_SECRET_ACCESS_KEY"]) == {"LAKE_SECRET_KEY"}
    for name in ("dagster-webserver", "dagster-daemon"):
        assert _env(services[name]) == app, name  # the daemon forwards its own variables to every run
    mlflow = _env(services["mlflow"])
    assert _referenced(mlflow["AWS_ACCESS_KEY_ID"]) == {"MLFLOW_ARTIFACTS_ACCESS_KEY"}
    assert _referenced(mlflow["AWS_SECRET_ACCESS_KEY"]) == {"MLFLOW_ARTIFACTS_SECRET_KEY"}
    forwarded = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["env_vars"]
    assert not any(v.split("=", 1)[0] in STORE_ROOT or "MINIO_ROOT" in v for v in forwarded)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(forwarded)


STUB_MC = """#!/bin/sh
# a stand-in for MinIO's client: logs each call; `policy attach` fails, as mc does, when the policy is already attached
echo "mc $*" >> "$STUB_LOG"
case "$1 $2 $3" in
  "admin policy create") cp "$6" "$STUB_DIR/$5.policy" ;;
  "admin policy attach") [ ! -e "$STUB_DIR/$5.$7.attached" ] || { echo "policy change is already in effect" >&2; exit 1; }
                         touch "$STUB_DIR/$5.$7.attached" ;;
  "admin user info") echo "AccessKey: $5"; for f in "$STUB_DIR"/*."$5".attached; do [ -e "$f" ] && echo "PolicyName: $(basename "$f" ".$5.attached")"; done ;;
esac
"""


def test_store_init_job_gives_each_account_a_policy_limited_to_its_bucket(tmp_path):
    job = _services()["buckets"]
    script = job["command"][0] if isinstance(job["command"], list) else job["command"]
    script = script.replace("$$", "$")  # compose's escape for the container's own variables
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "mc").write_text(STUB_MC)
    (tmp_path / "bin" / "mc").chmod(0o755)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "TMPDIR": str(tmp_path),
        "STUB_LOG": str(tmp_path / "log"),
        "STUB_DIR": str(tmp_path),
        "MINIO_ROOT_USER": "root-account",
        "MINIO_ROOT_PASSWORD": "root-secret",
        "LAKE_BUCKET": "lake",
        "MLFLOW_BUCKET": "mlflow",
        "LAKE_ACCESS_KEY": "lake-account",
        "LAKE_SECRET_KEY": "lake-secret",
        "MLFLOW_ARTIFACTS_ACCESS_KEY": "mlflow-account",
        "MLFLOW_ARTIFACTS_SECRET_KEY": "mlflow-secret",
    }
    for attempt in ("first start", "restart"):  # the job runs on every `up`: a second run must succeed too
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (attempt, done.stdout, done.stderr)
    log = (tmp_path / "log").read_text().splitlines()
    assert "mc mb --ignore-existing local/lake local/mlflow" in log
    assert "mc admin user add local lake-account lake-secret" in log
    assert "mc admin user add local mlflow-account mlflow-secret" in log
    for account, bucket in (("lake-account", "lake"), ("mlflow-account", "mlflow")):
        policy = json.loads((tmp_path / f"charassets-{bucket}.policy").read_text())
        attached = sorted(p.name for p in tmp_path.glob(f"*.{account}.attached"))
        assert attached == [f"charassets-{bucket}.{account}.attached"], f"{account}: policies {attached}"
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            assert all(a.startswith("s3:") and "*" not in a for a in statement["Action"]), statement
            assert set(statement["Resource"]) <= {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}, statement
    # the root account is used only to sign the job in
    assert {line for line in log if "root-" in line} == {"mc alias set local http://minio:9000 root-account root-secret"}


# -- the image ---------------------------------------------------------------------------------------------


def test_image_runs_as_a_fixed_unprivileged_user():
    instructions = _instructions()
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "the image runs as root: no USER"
    user = instructions[users[-1]][1].strip()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or (gid.isdigit() and int(gid) != 0)), f"USER {user}: a fixed, non-root uid"
    assert all(keyword in ("CMD", "ENTRYPOINT", "EXPOSE", "LABEL") for keyword, _ in instructions[users[-1] + 1 :])
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(rf"useradd\b[^&;]*--uid {uid}\b", runs), "the account is not created with that uid"
    # it owns what it writes: DAGSTER_HOME, the shared volume's mount point, MLflow's account store
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    dagster_home = re.search(r"DAGSTER_HOME=(\S+)", env).group(1)
    chowned = re.search(rf"chown {uid}(?::\d+)? ([^&;]+)", runs)
    assert chowned, "nothing is given to the account"
    owned = set(chowned.group(1).split())
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow-auth.ini")
    auth_dir = str(Path(auth["mlflow"]["database_uri"].removeprefix("sqlite:///")).parent)
    assert {dagster_home, "/data", auth_dir} <= owned
    # every file the image copies exists
    for keyword, args in instructions:
        if keyword == "COPY":
            for src in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert (ROOT / src).exists(), src
    # the instance's run containers and the stack's own services gain no privilege
    kwargs = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["container_kwargs"]
    assert kwargs.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in kwargs.get("security_opt", [])
    for name, svc in _services().items():
        if svc["image"].startswith("${CHARASSETS_IMAGE"):
            assert svc.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in svc.get("security_opt", []), name
            assert "user" not in svc or not str(svc["user"]).startswith(("0", "root")), name


# -- MLflow ------------------------------------------------------------------------------------------------


def test_mlflow_requires_auth_and_runs_use_their_own_account():
    services = _services()
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert isinstance(command, list), "exec form: no shell runs the command, so it cannot expand variables"
    assert not any("$" in part for part in command), command
    assert command[command.index("--app-name") + 1] == "basic-auth", "MLflow serves without authentication"
    env = _env(mlflow)
    config = env["MLFLOW_AUTH_CONFIG_PATH"]
    copied = {
        str(Path(args.split()[-1]) / Path(src).name) for keyword, args in _instructions() if keyword == "COPY" for src in args.split()[:-1]
    }
    assert config in copied and config.endswith(f"/{(DOCKER / 'mlflow-auth.ini').name}")
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow-auth.ini")
    assert auth["mlflow"]["default_permission"] in ("READ", "NO_PERMISSIONS"), "authenticated accounts may edit what they did not create"
    assert "admin_password" not in auth["mlflow"]
    for name, var in (
        ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_ADMIN_USER"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SECRET_KEY"),
    ):
        assert _referenced(env[name]) == {var}, name
    assert any(re.search(r"mlflow\[auth\]", args) for keyword, args in _instructions() if keyword == "RUN"), "the image lacks mlflow[auth]"
    # the Host header runs send (http://mlflow:5000) is accepted; MLflow's default accepts only localhost and private IPs
    app = _env(services["charassets-code"])
    tracking_host = app["MLFLOW_TRACKING_URI"].split("://", 1)[1]
    assert tracking_host in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    # the admin password stays with MLflow and its init job; runs sign in with their own account
    assert _holders({"MLFLOW_ADMIN_PASSWORD"}) - {INIT_CHECK} == {"mlflow", "mlflow-users"}
    assert _referenced(app["MLFLOW_TRACKING_USERNAME"]) == {"MLFLOW_RUNS_USER"}
    assert _referenced(app["MLFLOW_TRACKING_PASSWORD"]) == {"MLFLOW_RUNS_PASSWORD"}
    forwarded = set(yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["env_vars"])
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= forwarded
    code_waits_for = services["charassets-code"]["depends_on"]
    assert code_waits_for["mlflow-users"] == {"condition": "service_completed_successfully"}


def _request(url: str, auth: tuple[str, str] | None = None, method: str = "GET", body: dict | None = None, host: str | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def mlflow_with_auth(tmp_path_factory):
    """``mlflow server`` run as the stack runs it (its command, auth config and Host list), on sqlite and 127.0.0.1."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic auth needs Flask-WTF (mlflow[auth]), which the image installs")
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    auth = configparser.ConfigParser()
    auth.read(DOCKER / "mlflow-auth.ini")
    auth["mlflow"]["database_uri"] = f"sqlite:///{tmp / 'basic_auth.db'}"
    with open(tmp / "auth.ini", "w") as f:
        auth.write(f)
    stack = _services()["mlflow"]
    port = free_port()
    command = list(stack["command"])
    command[0] = str(Path(sys.executable).parent / "mlflow")
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command += ["--workers", "1"]
    admin = ("admin", secrets.token_hex(20))
    env = {
        **os.environ,
        **{k: v for k, v in _env(stack).items() if not _referenced(v)},  # the stack's literal settings
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(20),
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "artifacts"),
    }
    for leaked in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        env.pop(leaked, None)
    url = f"http://127.0.0.1:{port}"
    with server(command, lambda: urllib.request.urlopen(f"{url}/health", timeout=2), "mlflow server (basic auth)", 90, env):
        yield url, admin


@pytest.mark.slow
def test_mlflow_server_refuses_requests_without_credentials_and_champion_moves_only_for_its_owner(mlflow_with_auth, monkeypatch):
    url, admin = mlflow_with_auth
    api = f"{url}/api/2.0/mlflow"
    search = f"{api}/registered-models/search"
    assert urllib.request.urlopen(f"{url}/health", timeout=5).status == 200  # the stack's healthcheck needs no credentials
    assert _request(search) == 401
    assert _request(search, (admin[0], "not-" + admin[1])) == 401
    assert _request(search, admin) == 200
    assert _request(search, admin, host="mlflow:5000") == 200  # as the runs reach it on the stack's network
    assert _request(search, admin, host="attacker.example:5000") == 403

    # the init job creates the runs' account, and re-keys it on a later start
    runs = ("charassets-runs", secrets.token_hex(20))
    job_env = {
        "PATH": os.environ["PATH"],
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_ADMIN_USER": admin[0],
        "MLFLOW_ADMIN_PASSWORD": admin[1],
        "MLFLOW_RUNS_USER": runs[0],
    }
    job = [sys.executable, str(DOCKER / "mlflow-users.py")]
    first = subprocess.run(job, env={**job_env, "MLFLOW_RUNS_PASSWORD": "first-" + runs[1]}, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and f"created {runs[0]}" in first.stdout, first.stderr
    again = subprocess.run(job, env={**job_env, "MLFLOW_RUNS_PASSWORD": runs[1]}, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"updated {runs[0]}" in again.stdout, again.stderr
    assert _request(search, (runs[0], "first-" + runs[1])) == 401
    wrong_admin = subprocess.run(
        job, env={**job_env, "MLFLOW_ADMIN_PASSWORD": "wrong", "MLFLOW_RUNS_PASSWORD": runs[1]}, capture_output=True, text=True, timeout=120
    )
    assert wrong_admin.returncode == 1 and "HTTP 401" in wrong_admin.stderr

    # a client signs in from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as the runs do
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", runs[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", runs[1])
    client = MlflowClient(url)
    client.create_registered_model("head_hair_color")
    assert [m.name for m in client.search_registered_models()] == ["head_hair_color"]
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="401|not authenticated"):
        MlflowClient(url).search_registered_models()

    # moving champion: its owner passes the permission check (no version 1 exists: 404), another account is refused
    reader = ("reader", secrets.token_hex(20))
    assert _request(f"{api}/users/create", admin, "POST", {"username": reader[0], "password": reader[1]}) == 200
    move = {"name": "head_hair_color", "alias": "champion", "version": "1"}
    assert _request(f"{api}/registered-models/alias", runs, "POST", move) == 404
    assert _request(f"{api}/registered-models/alias", reader, "POST", move) == 403
    assert _request(f"{api}/registered-models/alias", None, "POST", move) == 401
    assert _request(search, reader) == 200  # other accounts read
