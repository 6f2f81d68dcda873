"""The ontology and extraction: precedence, conflicts, subjects, and agreement with real character profiles."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from charassets.domain.ontology import Ontology
from charassets.domain.tags.cleaning import clean_tags
from charassets.domain.tags.extraction import extract_attributes
from charassets_tests.conftest import shared_file


def extract(tag_strings: list[str], vocabulary, ontology) -> list[dict]:
    recs = pl.DataFrame({"record_id": [str(i) for i in range(len(tag_strings))], "tags_raw": tag_strings})
    clean, _ = clean_tags(recs, {"tags": "tags_raw"}, ",", vocabulary)
    return extract_attributes(clean, ontology).to_dicts()


@pytest.mark.parametrize(
    ("tags", "status", "count"),
    [
        ("1girl, solo, long hair", "ok", 1),
        ("solo, long hair", "ok", 1),
        ("1boy, hatsune miku (cosplay)", "ok", 1),
        ("2girls, multiple girls, long hair", "ambiguous", 2),
        ("1girl, 1boy, smile", "ambiguous", 2),
        ("multiple boys, short hair", "ambiguous", 2),
        ("1girl, hatsune miku, kagamine rin", "ambiguous", 2),
        ("6+girls, crowd", "ambiguous", 12),
        ("no humans, scenery, sky", "no_character", 0),
        ("long hair, blue eyes", "ambiguous", None),
        ("scenery, sky", "no_character", None),
    ],
)
def test_subject_detection(tags, status, count, embedded_vocabulary, ontology):
    (row,) = extract([tags], embedded_vocabulary, ontology)
    assert (row["status"], row["subject_count"]) == (status, count)
    if status != "ok":
        assert row["hair_color"] is None and row["gender"] is None  # not extracted


def test_precedence_and_conflicts(embedded_vocabulary, ontology):
    rows = extract(
        [
            "1girl, long hair, very long hair",
            "1girl, short hair, long hair",
            "1girl, androgynous",
            "1girl, blonde hair, red hair, multicolored hair",
            "1girl, blonde hair, black hair",
            "1girl, child, school uniform",
            "1girl, medium hair, short hair",
        ],
        embedded_vocabulary,
        ontology,
    )
    assert rows[0]["hair_length"]["value"] == "long" and rows[0]["hair_length"]["evidence"] == ["long_hair", "very_long_hair"]
    assert rows[1]["hair_length"]["value"] == "unknown" and "conflict:hair_length" in rows[1]["flags"]
    assert rows[1]["hair_length"]["evidence"] == ["short_hair", "long_hair"] and rows[1]["hair_length"]["confidence"] == 0
    assert rows[2]["gender"]["value"] == "female" and rows[2]["gender"]["confidence"] == pytest.approx(
        0.98
    )  # a strong tag overrides outright
    assert rows[3]["hair_color"]["value"] == "multicolored" and rows[3]["hair_color"]["evidence"] == [
        "blonde_hair",
        "red_hair",
        "multicolored_hair",
    ]
    # several colours without a multicolour tag: the first-listed one, flagged, at lower confidence
    assert (
        rows[4]["hair_color"]["value"] == "blonde"
        and "several:hair_color" in rows[4]["flags"]
        and rows[4]["hair_color"]["confidence"] < 0.7
    )
    # direct evidence beats weak evidence for another value, at a discount, without a conflict
    assert rows[5]["age"]["value"] == "child" and rows[5]["age"]["confidence"] < 0.9 and not rows[5]["flags"]
    # neighbouring lengths are not a contradiction; short + long (above) is
    assert rows[6]["hair_length"]["value"] == "medium" and rows[6]["flags"] == ["several:hair_length"]


def test_ethnicity_only_from_visible_skin(embedded_vocabulary, ontology):
    rows = extract(
        ["1girl, dark skin, white hair", "1boy, cyno (genshin impact), genshin impact", "1girl, chinese clothes, china dress"],
        embedded_vocabulary,
        ontology,
    )
    assert rows[0]["ethnicity"]["value"] == "dark skin"
    assert rows[1]["ethnicity"]["value"] == "unknown"  # a name or a series is not evidence
    assert rows[2]["ethnicity"]["value"] == "unknown"  # nor is clothing of a culture


def test_open_fields_and_patterns(embedded_vocabulary, ontology):
    (row,) = extract(
        ["1girl, arm tattoo, scar on face, white dress, china dress, red gloves, witch hat, smile, blush"], embedded_vocabulary, ontology
    )
    assert row["tattoos"]["value"] == ["arm tattoo"]
    assert row["scars"]["value"] == ["scar on face"]
    assert row["dress"]["value"] == ["dress", "china dress"]  # the exact rule wins over the *_dress pattern
    assert set(row["accessories"]["value"]) == {"red gloves", "witch hat"}
    assert row["expression"]["value"] == ["smile", "blush"]


def test_a_new_field_is_only_an_ontology_edit(tmp_path, embedded_vocabulary):
    text = Ontology.load().source
    extra = (
        Path(text).read_text()
        + "\n  Wings:\n    key: wings\n    cardinality: single\n    values:\n      feathered: [feathered_wings, angel_wings]\n      bat: [bat_wings]\n"
    )
    path = tmp_path / "attributes.yaml"
    path.write_text(extra)
    onto = Ontology.load(path)
    (row,) = extract(["1girl, bat wings, red eyes"], embedded_vocabulary, onto)
    assert row["wings"]["value"] == "bat"
    from charassets.domain.schema import json_schema

    assert "Wings" in json_schema(onto)["$defs"]["CharacterAttributes"]["properties"]


# ---- agreement with real character profiles -----------------------------------------

COLORS = ["black", "brown", "blonde", "red", "orange", "pink", "purple", "blue", "aqua", "green", "white", "grey"]
SHADES = {f"{p}_{c}": c for c in COLORS for p in ("light", "dark")} | {"platinum_blonde": "blonde"}
HAIR_MULTI = {
    "multicolored_hair",
    "two-tone_hair",
    "gradient_hair",
    "streaked_hair",
    "split-color_hair",
    "colored_inner_hair",
    "rainbow_hair",
    "colored_tips",
}
EYE_MULTI = {"heterochromia", "multicolored_eyes", "gradient_eyes", "two-tone_eyes"}
LENGTH = {
    "short_hair": "short",
    "very_short_hair": "short",
    "medium_hair": "medium",
    "long_hair": "long",
    "very_long_hair": "long",
    "absurdly_long_hair": "long",
}
STYLE = {
    "ponytail": "ponytail",
    "side_ponytail": "side ponytail",
    "twintails": "twintails",
    "low_twintails": "twintails",
    "braid": "braid",
    "single_braid": "braid",
    "twin_braids": "twin braids",
    "hair_bun": "bun",
    "double_bun": "double bun",
    "single_hair_bun": "bun",
    "drill_hair": "drill hair",
    "twin_drills": "drill hair",
    "bob_cut": "bob cut",
    "hime_cut": "hime cut",
    "two_side_up": "two side up",
    "one_side_up": "one side up",
    "ahoge": "ahoge",
    "blunt_bangs": "blunt bangs",
    "hair_over_one_eye": "hair over one eye",
}


def _colors(tags: list[str], suffix: str) -> set[str]:
    out = set()
    for tag in tags:
        if m := re.fullmatch(rf"([a-z_]+)_{suffix}", tag):
            base = m.group(1)
            if base in COLORS:
                out.add(base)
            elif base in SHADES:
                out.add(SHADES[base])
    return out


def test_ontology_agrees_with_character_core_tags(danbooru_vocabulary, ontology):
    df = pl.read_csv(shared_file("characters/character_core_tags.csv"))
    rows = extract(df.get_column("core_tags").to_list(), danbooru_vocabulary, ontology)
    tally: dict[str, list[bool]] = {k: [] for k in ("Gender", "Hair Color", "Hair Length", "Eye Color", "Hair Style")}
    misses: dict[str, list[str]] = {k: [] for k in tally}
    for core, row in zip(df.get_column("core_tags").to_list(), rows, strict=True):
        tags = [x.strip().replace(" ", "_") for x in core.split(",")]
        if tags[0] not in ("1girl", "1boy"):
            continue
        if row["status"] != "ok":  # a single character read as several (or none) fails every field it has
            tally["Gender"].append(False)
            misses["Gender"].append(f"status {row['status']}: {core[:80]}")
            continue
        checks = {"Gender": (["female" if tags[0] == "1girl" else "male"], row["gender"]["value"])}
        hair, eyes = _colors(tags, "hair"), _colors(tags, "eyes")
        if hair or HAIR_MULTI & set(tags):
            checks["Hair Color"] = (["multicolored"] if HAIR_MULTI & set(tags) else sorted(hair), row["hair_color"]["value"])
        if eyes or EYE_MULTI & set(tags):
            checks["Eye Color"] = (["multicolored"] if EYE_MULTI & set(tags) else sorted(eyes), row["eye_color"]["value"])
        lengths = {LENGTH[x] for x in tags if x in LENGTH}
        if lengths:
            checks["Hair Length"] = (sorted(lengths), row["hair_length"]["value"])
        styles = {STYLE[x] for x in tags if x in STYLE}
        if styles:
            checks["Hair Style"] = (sorted(styles), row["hair_style"]["value"])
        for name, (expected, got) in checks.items():
            ok = set(expected) <= set(got) if name == "Hair Style" else got in expected
            tally[name].append(ok)
            if not ok:
                misses[name].append(f"{expected} vs {got}: {core[:80]}")
    rates = {k: round(sum(v) / len(v), 4) for k, v in tally.items()}
    print("agreement with core tags:", rates, {k: len(v) for k, v in tally.items()})
    globals()["MISSES"] = misses
    for name, rate in rates.items():
        assert len(tally[name]) >= 100, name
        assert rate >= 0.95, f"{name}: {rate}; e.g. {misses[name][:5]}"


def _rules_for_one_tag_at_a_time(ontology: Ontology, tags: pl.Series) -> pl.DataFrame:
    """``Ontology.rules_for`` as it was written before: each distinct tag tried against each pattern with ``re``."""
    from charassets.domain.ontology import RULES_SCHEMA, TAG_VALUE

    distinct = tags.unique().drop_nulls()
    exact = ontology.rules.join(distinct.to_frame("tag"), on="tag", how="semi")
    found = set(zip(exact.get_column("tag").to_list(), exact.get_column("field").to_list(), strict=True))
    extra = [
        (t, fname, value, rank, conf)
        for t in distinct.to_list()
        for rx, fname, value, rank, conf in ontology.patterns
        if (t, fname) not in found and rx.fullmatch(t)
    ]
    out = pl.concat([exact, pl.DataFrame(extra, schema=RULES_SCHEMA, orient="row")]).unique(
        ["tag", "field"], keep="first", maintain_order=True
    )
    return out.with_columns(
        pl.when(pl.col("value") == TAG_VALUE).then(pl.col("tag").str.replace_all("_", " ")).otherwise(pl.col("value")).alias("value")
    )


def _sorted(rules: pl.DataFrame) -> pl.DataFrame:
    return rules.sort("tag", "field")


def test_pattern_rules_match_whole_names_as_re_fullmatch_does(ontology, danbooru_vocabulary):
    """The patterns, run over every distinct tag at once in polars, give the rules that ``re.fullmatch`` gave one tag at
    a time: on the Danbooru tag list, on near misses, and with a pattern only Python's ``re`` compiles. (The rows'
    order follows ``Series.unique``, which is not the same from one call to the next: compared sorted.)"""
    import dataclasses
    import random

    known = danbooru_vocabulary.tags.get_column("tag").to_list()
    random.Random(0).shuffle(known)
    near = [
        "red_dress",
        "red_dress\n",
        "dress",
        "sundress",
        "_dress",
        "red_dress_(cosplay)",
        "Red_dress",
        "scar_on_face",
        "scar_across_eye",
        "scar_on_",
        "dragon_tattoo",
        "x-y_tattoo",
        "tattoo",
        "blue_hat",
        "black_thighhighs",
        "no_gloves",
        "red_gloves_x",
        "",
    ]
    tags = pl.Series([*known[:20000], *near, None], dtype=pl.String)
    got = ontology.rules_for(tags)
    assert got.height > 100 and got.filter(pl.col("tag").str.ends_with("_tattoo")).height  # patterns matched, beside exact rules
    for tagset in (tags, pl.Series(near, dtype=pl.String), pl.Series([], dtype=pl.String)):
        assert _sorted(ontology.rules_for(tagset)).equals(_sorted(_rules_for_one_tag_at_a_time(ontology, tagset)))
    lookahead = (re.compile(r"^(?!scar)[a-z]+_mark$"), "Scars", "_tag_", 1, 0.9)  # Rust's regex has no lookaround
    unanchored = (re.compile(r"[a-z]+_brand"), "Tattoos", "_tag_", 1, 0.9)  # still whole names only
    wider = dataclasses.replace(ontology, patterns=(*ontology.patterns, lookahead, unanchored))
    marks = pl.Series(["star_mark", "scar_mark", "bite_mark", "red_dress", "cow_brand", "cow_brand_x", "x_cow_brand!"], dtype=pl.String)
    assert set(wider.rules_for(marks).filter(pl.col("field") == "Tattoos").get_column("tag")) == {"cow_brand"}
    assert _sorted(wider.rules_for(marks)).equals(_sorted(_rules_for_one_tag_at_a_time(wider, marks)))
    assert set(wider.rules_for(marks).filter(pl.col("field") == "Scars").get_column("tag")) == {"star_mark", "bite_mark"}
