"""Character profiles give records back the look their tags left out, and flag contradictions."""

from __future__ import annotations

import polars as pl

from charassets.domain.demo import generate
from charassets.domain.pipeline import clean_stage, label_stage, mart_stage
from charassets.domain.sources import REJECT_SCHEMA, Chunk, SourcesConfig, read_chunk, register
from charassets.domain.tags.profiles import build_profiles, merge_counts, value_counts
from charassets_tests.conftest import shared_file


def test_profiles_restore_removed_hair_and_eye_colour(tmp_path, danbooru_vocabulary, ontology):
    core = shared_file("characters/character_core_tags.csv")
    # every named character's record keeps each look tag with probability 0.85: some lose their colours
    cfg = SourcesConfig.from_yaml(generate(tmp_path, n=40_000, characters=core, rows_per_partition=10_000, danbooru_share=0.0))
    labels_parts = []
    counts = None
    for spec in cfg.sources:
        for row in register(spec).iter_rows(named=True):
            records, _ = read_chunk(Chunk.from_row(row), spec)
            clean, _ = clean_stage(records, spec, danbooru_vocabulary)
            labels = label_stage(clean, ontology)
            labels_parts.append(labels)
            counts = merge_counts(counts, value_counts(labels, ontology))
    labels = pl.concat(labels_parts)
    profiles = build_profiles(counts, ontology)
    mart = mart_stage(labels, pl.DataFrame(schema=REJECT_SCHEMA), ontology, profiles, None)
    # the truth: what the ontology reads off each character's full core tags
    cat = pl.read_csv(core)
    truth_labels = label_stage(
        clean_stage(
            pl.DataFrame(
                {
                    "record_id": cat["character_tag"],
                    "source_id": cat["character_tag"],
                    "source": "t",
                    "partition": "t",
                    "row_index": range(cat.height),
                    "tags_raw": cat["core_tags"],
                }
            ).with_columns(
                *[
                    pl.lit(None, dtype=pl.String).alias(c)
                    for c in ("general_raw", "character_raw", "copyright_raw", "artist_raw", "meta_raw", "rating", "image_ref", "file")
                ]
            ),
            SourcesConfig.model_validate({"sources": [{"name": "t", "uri": "-"}]}).sources[0],
            danbooru_vocabulary,
        )[0],
        ontology,
    )
    single = mart.filter((pl.col("status") == "ok") & (pl.col("characters").list.len() == 1)).with_columns(
        pl.col("characters").list.first().alias("character")
    )
    rates = {}
    for key in ("hair_color", "eye_color"):
        truth = truth_labels.select(pl.col("record_id").alias("character"), pl.col(key).struct.field("value").alias("truth")).filter(
            pl.col("truth").is_not_null() & (pl.col("truth") != "unknown")
        )
        # characters with other records carrying the tag
        carried = (
            labels.filter(pl.col(key).struct.field("source") == "tags")
            .select(pl.col("characters").list.first().alias("character"))
            .unique()
        )
        removed = (
            single.join(truth, on="character")
            .join(carried, on="character", how="semi")
            .filter(pl.col(key).struct.field("evidence").list.eval(~pl.element().str.starts_with("profile:")).list.sum() == 0)
        )
        got = removed.select((pl.col(key).struct.field("value") == pl.col("truth")).mean()).item()
        rates[key] = (round(got, 4), removed.height)
        assert removed.height >= 300, key
        assert got >= 0.90, (
            key,
            got,
            removed.filter(pl.col(key).struct.field("value") != pl.col("truth")).select("character", key, "truth").head(5),
        )
    print("restored by profiles:", rates)


def test_contradicting_records_are_flagged(embedded_vocabulary, ontology):
    from charassets.domain.sources import RAW_SCHEMA, SourceSpec

    tags = ["1girl, hatsune miku, aqua hair"] * 4 + ["1girl, hatsune miku, pink hair", "1girl, hatsune miku, smile"]
    raw = pl.DataFrame(
        [
            {"record_id": f"t:{i}", "source_id": str(i), "source": "t", "partition": "p", "file": "-", "row_index": i, "tags_raw": t}
            for i, t in enumerate(tags)
        ],
        schema=RAW_SCHEMA,
    )
    labels = label_stage(clean_stage(raw, SourceSpec(name="t", uri="-"), embedded_vocabulary)[0], ontology)
    profiles = build_profiles(value_counts(labels, ontology), ontology)
    mart = mart_stage(labels, pl.DataFrame(schema=REJECT_SCHEMA), ontology, profiles, None)
    rows = mart.sort("row_index").to_dicts()
    assert rows[4]["hair_color"]["value"] == "pink" and "contradicts_profile:hair_color=aqua" in rows[4]["flags"]
    assert rows[5]["hair_color"] == {
        "value": "aqua",
        "confidence": rows[5]["hair_color"]["confidence"],
        "evidence": ["profile:hatsune_miku"],
        "source": "profile",
    }
    assert 0.9 < rows[5]["hair_color"]["confidence"] < 1  # four of five posts agree: a confident posterior, never certainty


def test_prior_profiles_merge_back_as_counts_for_single_and_list_fields(ontology):
    from charassets.domain.tags.profiles import STATED, profiles_as_counts

    counts = pl.DataFrame(
        [
            ("miku", "hair_color", "aqua", 4),
            ("miku", "hair_color", "green", 1),
            ("miku", "hair_style", "twintails", 3),
            ("miku", "hair_style", STATED, 4),
        ],
        schema=["character", "field", "value", "n"],
        orient="row",
    )
    prior = build_profiles(counts, ontology)
    merged = build_profiles(merge_counts(profiles_as_counts(prior, ontology), counts), ontology)
    assert (merged["support"] <= merged["records"]).all() and (merged["confidence"] <= 1).all()
    style = merged.filter(pl.col("field") == "hair_style").row(0, named=True)
    assert (style["value"], style["support"], style["records"]) == ("twintails", 6, 8)  # the lake's 3 of 4, and the file's 3 of 4
    colour = merged.filter(pl.col("field") == "hair_color").row(0, named=True)
    assert (colour["value"], colour["support"], colour["records"]) == ("aqua", 8, 10)


def test_value_counts_are_each_single_character_posts_directly_evidenced_values(tmp_path, danbooru_vocabulary, ontology):
    """``value_counts`` against the rule spelled out record by record in Python: an ok post naming one character counts
    for its tag-stated value when any of its evidence is direct; a post stating several values counts once for each value
    its direct evidence names; a list field counts each value and that it is stated at all. The same record id in two
    partitions read together counts twice."""
    from collections import Counter

    from charassets.domain.tags.profiles import STATED, direct_rules, multi_profile_fields, profile_fields

    cfg = SourcesConfig.from_yaml(
        generate(tmp_path, n=6_000, characters=shared_file("characters/character_core_tags.csv"), rows_per_partition=3_000)
    )
    parts = []
    for spec in cfg.sources:
        for row in register(spec).iter_rows(named=True):
            records, _ = read_chunk(Chunk.from_row(row), spec)
            parts.append(label_stage(clean_stage(records, spec, danbooru_vocabulary)[0], ontology))
    labels = pl.concat(parts, how="diagonal_relaxed")
    labels = pl.concat([labels, labels.head(500).with_columns(pl.lit("another").alias("partition"))])  # ids seen twice
    expected: Counter = Counter()
    direct = {f.key: direct_rules(ontology, f.name) for f in profile_fields(ontology)}
    for r in labels.iter_rows(named=True):
        if r["status"] != "ok" or len(r["characters"] or []) != 1:
            continue
        character = r["characters"][0]
        for f in profile_fields(ontology):
            v = r[f.key]
            if v["source"] != "tags" or v["value"] == "unknown":
                continue
            named = {value for tag, value in direct[f.key].iter_rows() if tag in (v["evidence"] or [])}
            if f"several:{f.key}" in (r["flags"] or []):
                expected.update((character, f.key, value) for value in named)
            elif named:
                expected[(character, f.key, v["value"])] += 1
        for f in multi_profile_fields(ontology):
            v = r[f.key]
            if v["source"] == "tags" and v["value"]:
                expected.update((character, f.key, value) for value in v["value"])
                expected[(character, f.key, STATED)] += 1
    got = {(c, f, v): n for c, f, v, n in value_counts(labels, ontology).iter_rows()}
    assert got == dict(expected)
    several = labels.filter(pl.col("flags").list.eval(pl.element().str.starts_with("several:")).list.any() & (pl.col("status") == "ok"))
    assert several.height > 0 and len(got) > 50  # both paths exercised
