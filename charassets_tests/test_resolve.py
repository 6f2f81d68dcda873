"""One resolver: the order of trust it applies is the one every document states."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import polars as pl
import pytest

from charassets.domain import resolve as R
from charassets.domain.candidates import decide
from charassets.domain.ontology import FILL_SOURCES, Ontology
from charassets.domain.pipeline import clean_stage, label_stage
from charassets.domain.schema import json_schema
from charassets.domain.sources import RAW_SCHEMA, SourceSpec

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_takes_the_first_source_present_in_precedence_order():
    """Every subset of sources offering a candidate (64 rows): the winner is the first of PRECEDENCE in the subset."""
    rows = list(itertools.product([False, True], repeat=len(R.PRECEDENCE)))
    frame = pl.DataFrame({s: [r[i] for r in rows] for i, s in enumerate(R.PRECEDENCE)})
    cands = {
        s: pl.when(pl.col(s)).then(R.attribute_value(pl.lit(s), pl.lit(0.5), pl.lit([], dtype=pl.List(pl.String)), s)) for s in R.PRECEDENCE
    }
    won = frame.select(R.resolve(cands, R.empty_value(False)).struct.field("value")).to_series().to_list()
    for offered, winner in zip(rows, won, strict=True):
        present = [s for s, o in zip(R.PRECEDENCE, offered, strict=True) if o]
        assert winner == (present[0] if present else R.UNKNOWN)
    with pytest.raises(ValueError, match="not a source"):
        R.resolve({"guess": pl.lit(None)}, R.empty_value(False))


def test_every_document_states_the_order_resolve_applies():
    order = " > ".join(s.replace("_", " ") for s in R.PRECEDENCE)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"The order of trust is always {order}" in readme
    # the README's source bullets, in order
    bullets = re.findall(r"^- \*\*([a-z ]+)\*\*", (ROOT / "README.md").read_text(), flags=re.M)
    named = [b for b in bullets if b.replace(" ", "_") in R.PRECEDENCE]
    assert named == [s.replace("_", " ") for s in R.PRECEDENCE]
    # the resolve module's own numbered list
    doc = re.findall(r"^\d\. ``(\w+)``", R.__doc__, flags=re.M)
    assert tuple(doc) == R.PRECEDENCE
    # the policy table's columns, the fill vocabulary and the schema's enum: the same order
    header = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| field | tags"))
    assert [c.strip().replace(" ", "_") for c in header.strip("|").split("|")[1:]] == list(R.SOURCES)
    assert FILL_SOURCES == R.SOURCES
    enum = json_schema(Ontology.load())["$defs"]["HairColorValue"]["properties"]["source"]["anyOf"][0]["enum"]
    assert tuple(enum) == R.SOURCES


def _labels(ontology, vocabulary, tags: dict[str, str]) -> pl.DataFrame:
    spec = SourceSpec(name="s", uri="-", layout="ordered")
    raw = pl.DataFrame(
        [
            {"record_id": k, "source_id": k, "source": "s", "partition": "p", "file": "-", "row_index": i, "tags_raw": v}
            for i, (k, v) in enumerate(tags.items())
        ],
        schema=RAW_SCHEMA,
    ).with_columns(pl.col("source_id").alias("record_id"))
    clean, _ = clean_stage(raw, spec, vocabulary)
    return label_stage(clean, ontology)


def _prediction(ids: list[str], value: str, model: str) -> pl.Series:
    return pl.Series(
        "hair_color",
        [{"value": value, "confidence": 0.95, "above_threshold": True, "model": model} for _ in ids],
        dtype=pl.Struct({"value": pl.String, "confidence": pl.Float32, "above_threshold": pl.Boolean, "model": pl.String}),
    )


def test_decide_applies_the_precedence_across_real_sources(ontology, embedded_vocabulary):
    """One record whose hair colour every source could fill; remove the winner each time: the next in PRECEDENCE wins."""
    import json

    # 25 tag-labelled records verify the head's class "green" on this partition; "x" has no hair tag
    tags = {"x": "1girl, solo, hatsune_miku", **{f"v{i}": "1girl, solo, green hair" for i in range(25)}}
    tags["c"] = "1girl, solo, hatsune_miku, red hair, blue hair"  # a conflict the profile settles
    labels = _labels(ontology, embedded_vocabulary, tags)
    assert labels.filter(pl.col("record_id") == "x").get_column("characters").to_list() == [["hatsune_miku"]]
    profiles = pl.DataFrame(
        {"character": ["hatsune_miku"], "field": ["hair_color"], "value": ["blue"], "confidence": [0.99], "fill_threshold": [0.5]}
    )
    ids = labels.get_column("record_id").to_list()
    heads = pl.DataFrame({"record_id": ids}).with_columns(_prediction(ids, "green", "text@v1"))
    image_heads = pl.DataFrame({"record_id": ["x"]}).with_columns(_prediction(["x"], "pink", "image@v1"))
    reading = {"hair_color": {"value": "purple", "confidence": 0.9, "evidence": ["animeface:hair=#8040a0"], "source": "image"}}
    signals = pl.DataFrame(
        {"record_id": ["x"], "status": ["ok"], "faces": [1], "flags": [[]], "attributes": [json.dumps(reading)]},
        schema_overrides={"flags": pl.List(pl.String)},
    )
    images = {
        "tagless": pl.DataFrame({"record_id": []}, schema={"record_id": pl.String}),
        "signals": signals,
        "image_predictions": image_heads,
    }

    def winner(record: str, **drop) -> tuple[str, str]:
        out = decide(
            labels,
            ontology,
            None if drop.get("profile") else profiles,
            None if drop.get("head") else heads,
            {
                **images,
                # the picture was read, but said nothing about hair
                **({"signals": signals.with_columns(pl.lit("{}").alias("attributes"))} if drop.get("image") else {}),
                **({"image_predictions": None} if drop.get("image_head") else {}),
            },
        )
        v = out.filter(pl.col("record_id") == record).get_column("hair_color").item()
        return v["source"], v["value"]

    assert winner("v0") == ("tags", "green")  # tags first
    assert winner("c") == ("tags", "blue")  # identity: the profile chose among the tags' own values (reported as tags)
    assert winner("x") == ("profile", "blue")
    assert winner("x", profile=True) == ("image", "purple")
    assert winner("x", profile=True, image=True) == ("head", "green")
    assert winner("x", profile=True, image=True, head=True) == ("image_head", "pink")
    assert winner("x", profile=True, image=True, head=True, image_head=True) == (None, "unknown")
