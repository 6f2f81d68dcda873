"""Real-style posts end to end: the development set, `extract --input`, `evaluate`, and what heads may add.

The development set is generated from the shared character list with a fixed seed; the
figures asserted here are the acceptance figures of the real-data and heads work.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest
from click.testing import CliRunner

from charassets.cli import main
from charassets.definitions import build_definitions
from charassets.domain.demo import generate
from charassets.domain.devset import DevsetConfig, generate_devset
from charassets.domain.evaluation import evaluate, read_rows
from charassets.domain.ontology import Ontology
from charassets.runner import build_everything
from charassets_tests.conftest import shared_file

CORE_FIELDS = ("Gender", "Hair Color", "Eye Color", "Hair Length")


@pytest.fixture(scope="module")
def devset(tmp_path_factory):
    out = tmp_path_factory.mktemp("devset")
    return generate_devset(out, shared_file("characters/character_core_tags.csv"), seed=7, config=DevsetConfig(characters=150))


def _extract(posts, out, monkeypatch, home, keep_mlflow: bool = False) -> list[dict]:
    """`charassets extract --input` as a user runs it, against the project home ``home``."""
    monkeypatch.setenv("CHARASSETS_HOME", str(home))
    for var in ("CHARASSETS_LAKE", "CHARASSETS_SOURCES", "CHARASSETS_VOCABULARY", *(() if keep_mlflow else ("MLFLOW_TRACKING_URI",))):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, ["extract", "--input", str(posts), "--output", str(out)])
    assert result.exit_code == 0, result.output
    return read_rows(out)


@pytest.fixture(scope="module")
def plain_output(devset, tmp_path_factory):
    """The dev posts through `extract --input` with no settings and no trained heads (a fresh home)."""
    mp = pytest.MonkeyPatch()
    try:
        home = tmp_path_factory.mktemp("fresh_home")
        return _extract(devset[0], home / "out.jsonl", mp, home)
    finally:
        mp.undo()


def test_generator_is_deterministic_and_real_looking(devset, tmp_path):
    posts, gold = devset
    again = generate_devset(tmp_path, shared_file("characters/character_core_tags.csv"), seed=7, config=DevsetConfig(characters=150))
    assert posts.read_bytes() == again[0].read_bytes() and gold.read_bytes() == again[1].read_bytes()
    text = posts.read_text()
    rows = read_rows(gold)
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("ok", "ambiguous", "no_character")}
    assert statuses["ok"] == 150 * 5 and statuses["ambiguous"] > 50 and statuses["no_character"] > 20
    # what real posts look like: weights, escapes, real aliases, typos, dropped evidence
    assert ":1." in text and "\\(" in text and any(a in text for a in ("1girls", "sole_female", "female_solo"))
    assert sum(bool(r.get("dropped")) for r in rows) > 200


def test_real_style_posts_meet_the_accuracy_targets_with_no_settings(devset, plain_output, tmp_path):
    report = evaluate(read_rows(devset[1]), plain_output, Ontology.load())
    assert report["matched"] == report["rows"]  # no row dropped
    assert report["status"]["accuracy"] >= 0.98
    for name in (*CORE_FIELDS, "Hair Style"):
        f = report["fields"][name]
        target = 0.97 if name == "Hair Style" else 0.98
        assert f["evidence"]["right_of_all"] >= target, (name, f["evidence"])
        assert f["dropped"]["right_of_all"] >= 0.85, (name, f["dropped"])
        at_90 = next(r for r in f["reliability"] if r["min_confidence"] == 0.9)
        assert at_90["n"] > 0 and at_90["accuracy"] >= 0.9, (name, at_90)
    # the command prints the same figures and writes JSON and a plot
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in plain_output))
    result = CliRunner().invoke(main, ["evaluate", str(devset[1]), str(out)])
    assert result.exit_code == 0, result.output
    assert "subject status accuracy" in result.output and "Hair Color" in result.output
    written = json.loads((tmp_path / "out.eval.json").read_text())
    assert written["fields"]["Hair Color"]["evidence"] == report["fields"]["Hair Color"]["evidence"]
    assert (tmp_path / "out.reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_conflicts_are_resolved_by_identity_and_rewrites_are_listed(plain_output):
    resolved = [r for r in plain_output if any(f.startswith("conflict_resolved:") for f in r["flags"])]
    assert resolved, "the development set plants contradicting tags"
    for r in resolved:
        key = next(f for f in r["flags"] if f.startswith("conflict_resolved:")).split(":", 1)[1]
        attr = next(
            a for a in r["attributes"].values() if a and a["source"] == "tags" and any(e.startswith("profile:") for e in a["evidence"])
        )
        assert attr and key
    respelled = [f for r in plain_output for f in r["flags"] if f.startswith("respelled:")]
    assert "respelled:1girls=1girl" in respelled or "respelled:sole_female=1girl" in respelled


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A project home after a full demo build: profiles, and champion heads trained on demo records."""
    home = tmp_path_factory.mktemp("demo_home")
    sources = generate(home / "demo", n=8000, rows_per_partition=4000)
    env = {"CHARASSETS_SOURCES": str(sources), "CHARASSETS_HOME": str(home)}
    defs = build_definitions(env)
    with dg.DagsterInstance.ephemeral() as instance:
        build = build_everything(defs, instance, log_level="WARNING")
    assert not build.failed_checks
    return home, defs


def test_demo_heads_guess_nothing_on_real_style_posts(devset, demo_home, tmp_path, monkeypatch):
    home, _ = demo_home
    with_heads = _extract(devset[0], tmp_path / "heads.jsonl", monkeypatch, home)
    # the same home (the demo's profiles too) with the heads switched off: a model store with no champions
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no_models.db'}")
    without = _extract(devset[0], tmp_path / "no_heads.jsonl", monkeypatch, home, keep_mlflow=True)
    gold = read_rows(devset[1])
    ontology = Ontology.load()
    ok = [r for r in with_heads if r["status"] == "ok"]
    # Ethnicity only ever from skin evidence in the post
    skin_tags = set(ontology.rules.filter(ontology.rules["field"] == "Ethnicity")["tag"].to_list())
    guessed = [
        r
        for r in ok
        if r["attributes"]["Ethnicity"]["value"] != "unknown" and not set(r["attributes"]["Ethnicity"]["evidence"]) & skin_tags
    ]
    assert len(guessed) <= 0.01 * len(ok)
    assert all(r["attributes"]["Age"]["source"] in (None, "tags", "profile") for r in ok)
    # list values backed by a tag of the post or the character's profile
    values = [
        (v, a["source"]) for r in ok for name in ("Hair Style", "Dress", "Expression") for a in [r["attributes"][name]] for v in a["value"]
    ]
    backed = sum(src in ("tags", "profile") for _, src in values)
    assert values and backed >= 0.9 * len(values)
    # heads never make a field worse than rules and profiles alone
    on, off = evaluate(gold, with_heads, ontology), evaluate(gold, without, ontology)
    for name in (*CORE_FIELDS, "Hair Style"):
        for group in ("evidence", "dropped"):
            assert on["fields"][name][group]["right_of_all"] >= off["fields"][name][group]["right_of_all"] - 0.005, (name, group)


def test_readme_example_gets_only_what_its_tags_say(demo_home, monkeypatch):
    home, _ = demo_home
    monkeypatch.setenv("CHARASSETS_HOME", str(home))
    monkeypatch.delenv("CHARASSETS_LAKE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(main, ["extract", "--tags", "1girl, solo, long hair, (blue eyes:1.2), grey hair"])
    assert result.exit_code == 0, result.output
    attrs = json.loads(result.stdout)["attributes"]
    assert attrs["Age"]["value"] == "unknown" and attrs["Ethnicity"]["value"] == "unknown"
    assert attrs["Hair Style"]["value"] == [] and attrs["Dress"]["value"] == []
    assert (attrs["Hair Color"]["value"], attrs["Eye Color"]["value"], attrs["Hair Length"]["value"]) == ("grey", "blue", "long")
    # with champion heads present, a partition with no record a head could fill still goes through
    several = CliRunner().invoke(main, ["extract", "--tags", "2girls, multiple girls, long hair"])
    assert several.exit_code == 0 and json.loads(several.stdout)["status"] == "ambiguous"


def test_demo_final_table_fills_ethnicity_only_from_evidence(demo_home):
    import polars as pl

    _, defs = demo_home
    mart = defs.resources["lake"].lake().read("marts", "character_attributes").filter(pl.col("status") == "ok")
    sources = mart.select(pl.col("ethnicity").struct.field("source")).to_series().drop_nulls().unique().to_list()
    assert set(sources) <= {"tags", "image"}
    for key in ("dress", "expression", "accessories"):
        assert set(mart.select(pl.col(key).struct.field("source")).to_series().drop_nulls().unique().to_list()) <= {"tags", "image"}
