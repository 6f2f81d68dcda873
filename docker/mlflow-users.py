"""Create, or re-key, the MLflow account the runs use: the `mlflow-users` init job of docker/compose.yaml.

Idempotent: after it, the account MLFLOW_RUNS_USER exists with the password MLFLOW_RUNS_PASSWORD and
is not an admin. It signs in as the admin (MLFLOW_ADMIN_USER, MLFLOW_ADMIN_PASSWORD) at
MLFLOW_TRACKING_URI, and checks at the end that the runs account can sign in. Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def call(base: str, method: str, path: str, auth: tuple[str, str], body: dict | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")[:500]


def ensure_runs_user(env: dict[str, str], wait_s: float = 60.0) -> str:
    """Make the runs account match ``env``; return what was done. Raises RuntimeError when it cannot."""
    base = env["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow"
    admin = (env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"])
    user, password = env["MLFLOW_RUNS_USER"], env["MLFLOW_RUNS_PASSWORD"]
    if user == admin[0]:
        raise RuntimeError("MLFLOW_RUNS_USER must not be the admin account")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            status, found = call(base, "GET", "/users/get?" + urllib.parse.urlencode({"username": user}), admin)
            break
        except OSError as error:  # the server is still starting
            if time.monotonic() > deadline:
                raise RuntimeError(f"MLflow server not reachable at {base}: {error}") from None
            time.sleep(2)
    if status == 200:
        status, answer = call(base, "PATCH", "/users/update-password", admin, {"username": user, "password": password})
        if status != 200:
            raise RuntimeError(f"could not set the password of {user}: HTTP {status} {answer}")
        if found.get("user", {}).get("is_admin"):
            status, answer = call(base, "PATCH", "/users/update-admin", admin, {"username": user, "is_admin": False})
            if status != 200:
                raise RuntimeError(f"could not revoke admin from {user}: HTTP {status} {answer}")
        done = f"updated {user}"
    elif status == 404:
        status, answer = call(base, "POST", "/users/create", admin, {"username": user, "password": password})
        if status != 200:
            raise RuntimeError(f"could not create {user}: HTTP {status} {answer}")
        done = f"created {user}"
    else:
        raise RuntimeError(f"could not look up {user} as {admin[0]}: HTTP {status} {found}")
    status, answer = call(base, "GET", "/registered-models/search?max_results=1", (user, password))
    if status != 200:
        raise RuntimeError(f"{user} cannot sign in: HTTP {status} {answer}")
    return done


def main() -> int:
    try:
        print(f"mlflow-users: {ensure_runs_user(dict(os.environ))}")
    except KeyError as error:
        print(f"mlflow-users: {error.args[0]} is not set", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"mlflow-users: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
