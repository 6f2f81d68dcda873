"""Shared fixtures. Real data is read from $CHARASSETS_SHARED_DATA (default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charassets.domain.ontology import Ontology
from charassets.domain.vocabulary import Vocabulary

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
