"""Shared fixtures. Real data is read from $CHARASSETS_SHARED_DATA (default ../shared/data)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from charassets.domain.ontology import Ontology
from charassets.domain.tags.vocabulary import Vocabulary

SHARED = Path(os.environ.get("CHARASSETS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


@pytest.fixture(scope="session")
def ontology() -> Ontology:
    return Ontology.load()


@pytest.fixture(scope="session")
def embedded_vocabulary() -> Vocabulary:
    return Vocabulary.embedded()


@pytest.fixture(scope="session")
def danbooru_vocabulary() -> Vocabulary:
    return Vocabulary.from_csv(shared_file("vocab/danbooru_tags.csv"), shared_file("vocab/danbooru_tag_aliases.csv"))


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri(monkeypatch):
    """``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment; keep it from leaking between tests."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def lake_env(root: Path, sources: Path) -> dict[str, str]:
    """Settings of a throwaway project home: its sources, its lake, the fast hashing embedder."""
    return {
        "CHARASSETS_SOURCES": str(sources),
        "CHARASSETS_LAKE": str(root / "lake"),
        "CHARASSETS_HOME": str(root),
        "CHARASSETS_EMBEDDER": "hashing:64",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], ready, name: str, timeout: float, env: dict | None = None):
    """Start ``cmd``, wait until ``ready()`` stops raising OSError, stop it on exit.

    Its output goes to a file, not a pipe: a chatty server would block on a full pipe. The context
    yields a function that returns the tail of that output, for a failing test to show.
    """
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    ready()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"{name} did not start: {log.read().decode(errors='replace')[-2000:]}") from None
                    time.sleep(0.3)

            def tail(chars: int = 4000) -> str:
                log.seek(0)
                return log.read().decode(errors="replace")[-chars:]

            yield tail
        finally:
            proc.terminate()
            proc.wait(30)
