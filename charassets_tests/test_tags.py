"""Each tag-cleaning step alone, then the chain, on tags as they appear in the wild."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charassets.domain.tags import cleaning as t
from charassets.domain.tags.cleaning import clean_tags
from charassets_tests.conftest import shared_file


def tokens(*values: str, record: str = "r1") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "record_id": [record] * len(values),
            "pos": list(range(len(values))),
            "token": list(values),
            "given_category": [None] * len(values),
        },
        schema=t.TOKENS_SCHEMA,
    )


def test_split_ordered_string_keeps_order_and_empty_tokens():
    recs = pl.DataFrame({"record_id": ["a"], "tags_raw": ["1girl, long hair,, smile\nsolo"]})
    out = t.split_tokens(recs, {"tags": "tags_raw"}, ",")
    assert out.get_column("token").to_list() == ["1girl", " long hair", "", " smile", "solo"]
    assert out.get_column("pos").to_list() == [0, 1, 2, 3, 4]


def test_split_danbooru_columns_gives_categories_and_drops_blank_columns():
    recs = pl.DataFrame({"record_id": ["a"], "g": ["1girl  long_hair solo"], "c": ["hatsune_miku"], "m": [""]})
    out = t.split_tokens(recs, {"general": "g", "character": "c", "meta": "m"}, " ")
    assert out.select("token", "given_category").rows() == [
        ("hatsune_miku", "character"),
        ("1girl", "general"),
        ("long_hair", "general"),
        ("solo", "general"),
    ]


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [("pokÃ©mon", "pokémon"), ("cafÃ©", "café"), ("â€œsmileâ€\x9d", '"smile"'), ("long hair", "long hair")],
)
def test_repair_mojibake(raw, fixed):
    out, changed = t.repair_mojibake(tokens(raw))
    assert out.item(0, "token") == fixed
    assert changed == (raw != fixed)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("(long hair:1.2)", "long hair"),
        ("((masterpiece))", "masterpiece"),
        ("[blue eyes]", "blue eyes"),
        ("{smile}", "smile"),
        ("long hair:0.8", "long hair"),
        ("(saber \\(fate\\):1.1)", "saber \\(fate\\)"),
        ("saber \\(fate\\)", "saber \\(fate\\)"),
        ("saber_(fate)", "saber_(fate)"),
        (":3", ":3"),
        (":d", ":d"),
        ("^_^", "^_^"),
        ("(open mouth", "open mouth"),
        ("smile)", "smile"),
    ],
)
def test_strip_weight(raw, clean):
    assert t.strip_weight(raw) == clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Long Hair ", "long_hair"),
        ("hatsune miku", "hatsune_miku"),
        ("saber \\(fate\\)", "saber_(fate)"),
        ("BLUE_EYES", "blue_eyes"),
        ("long\u200bhair", "longhair"),
        ("white  background", "white_background"),
        (":D", ":d"),
    ],
)
def test_normalize_spelling(raw, clean):
    assert t.normalize_spelling(tokens(raw)).item(0, "token") == clean


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3) | st.integers(0, 2**32 - 1),  # few records, so that repeats within one are common
            st.integers(0, 50) | st.integers(0, 2**32 - 1),
            st.sampled_from(["", "a", "b"]),
            st.integers(0, 5),
        ),
        max_size=60,
        unique_by=lambda r: (r[0], r[1]),  # (record, position) is unique, as split_tokens makes it
    ),
    st.sampled_from([pl.UInt32, pl.Int64]),
    st.booleans(),
)
def test_dropping_repeats_by_one_key_is_the_two_column_sort_and_first_distinct(rows, record_dtype, a_null_code):
    """The one-key sort and the stable-sort repeat finder keep exactly the rows the plain polars version keeps, in its
    order: for the chain's UInt32 row numbers and codes (the fast path), and for other ids or null codes (the plain one)."""
    tokens = pl.DataFrame(
        {
            "record_id": [r[0] for r in rows],
            "pos": [r[1] for r in rows],
            "token": [r[2] for r in rows],
            "tid": [None if a_null_code and i < 2 else r[3] for i, r in enumerate(rows)],  # two: a repeated null
        },
        schema={"record_id": record_dtype, "pos": pl.UInt32, "token": pl.String, "tid": pl.UInt32},
    )
    out, empty, dups = t.drop_empty_and_duplicates(tokens, key="tid")
    plain = tokens.filter(pl.col("token") != "").sort("record_id", "pos")
    expected = plain.filter(pl.struct("record_id", "tid").is_first_distinct())
    assert out.equals(expected)
    assert (empty, dups) == (tokens.height - plain.height, plain.height - expected.height)


def test_drop_empty_and_duplicates_keeps_first():
    out, empty, dups = t.drop_empty_and_duplicates(tokens("1girl", "", "smile", "1girl", "smile"))
    assert out.get_column("token").to_list() == ["1girl", "smile"]
    assert (empty, dups) == (1, 2)


def test_resolve_aliases_with_danbooru_vocabulary(danbooru_vocabulary):
    out, changed = t.resolve_aliases(
        tokens("gray_hair", "blond_hair", "1girls", "twin_tails", "long_hair", "sole_female"), danbooru_vocabulary
    )
    assert out.get_column("token").to_list() == ["grey_hair", "blonde_hair", "1girl", "twintails", "long_hair", "1girl"]
    assert changed == 5


def test_classify_with_danbooru_vocabulary(danbooru_vocabulary):
    out = t.classify(
        tokens("hatsune_miku", "vocaloid", "long_hair", "highres", "masterpiece", "rating:general", "year_2023", "zzz_not_a_tag"),
        danbooru_vocabulary,
    )
    assert out.get_column("category").to_list() == ["character", "copyright", "general", "meta", "prompt", "prompt", "prompt", "unknown"]
    assert out.get_column("is_unknown").to_list() == [False] * 7 + [True]


def test_clean_chain_on_a_messy_prompt(danbooru_vocabulary):
    recs = pl.DataFrame(
        {
            "record_id": ["a", "b"],
            "tags_raw": [
                "1girl, Hatsune Miku, vocaloid, (Long Hair:1.2), gray hair, ,, twin tails, long_hair, pokÃ©mon, masterpiece, best quality, newest, weird_new_tag",
                None,
            ],
        }
    )
    out, stats = t.clean_tags(recs, {"tags": "tags_raw"}, ",", danbooru_vocabulary)
    a = out.row(0, named=True)
    assert a["character"] == ["hatsune_miku"]
    assert a["copyright"] == ["vocaloid", "pokemon"]
    assert a["general"] == ["1girl", "long_hair", "grey_hair", "twintails"]
    assert a["prompt_tags"] == ["masterpiece", "best_quality", "newest"]
    assert a["unknown_tags"] == ["weird_new_tag"]
    assert "masterpiece" not in a["tags"] and "weird_new_tag" in a["tags"]
    assert out.row(1, named=True)["tags"] == []  # every record comes out, even with nothing left
    assert stats.duplicates_dropped == 1 and stats.mojibake_repaired == 1 and stats.aliases_resolved >= 2


# ---------------------------------------------------------------------------- the embedded vocabulary


def test_bundled_vocabulary_is_not_stale(tmp_path):
    """`make vocab` output equals what is bundled: the Danbooru rows, and the project's own rows."""
    from charassets.domain.demo import embedded_vocabulary_rows
    from charassets.domain.tags.vocabulary import EMBEDDED_DANBOORU, EMBEDDED_VOCABULARY, bundled_rows, read_tagcomplete_csv

    source = shared_file("vocab/danbooru_tags.csv")
    assert pl.read_parquet(EMBEDDED_DANBOORU).equals(bundled_rows(source)), "run `make vocab`"
    own = pl.DataFrame(embedded_vocabulary_rows(), schema=["tag", "category_code", "post_count", "aliases"], orient="row")
    assert read_tagcomplete_csv(EMBEDDED_VOCABULARY).with_columns(pl.col("aliases").fill_null("")).equals(own), "run `make vocab`"


def test_embedded_default_is_the_full_danbooru_list_plus_the_project_tags(embedded_vocabulary, ontology):
    tags = set(embedded_vocabulary.tags.get_column("tag").to_list())
    assert len(tags) > 140_000
    assert set(ontology.rules.get_column("tag").to_list()) <= tags  # the ontology's own tags are always known
    wanted = ["hoshino_ai", "fennec_(kemono_friends)", "blue_eyes"]
    got = dict(embedded_vocabulary.tags.filter(pl.col("tag").is_in(wanted)).select("tag", "category").iter_rows())
    assert got == {"hoshino_ai": "character", "fennec_(kemono_friends)": "character", "blue_eyes": "general"}


@pytest.mark.parametrize(
    "written, canonical",
    [
        ("1girls", "1girl"),
        ("sole_female", "1girl"),
        ("female_solo", "solo"),
        ("green-eyes", "green_eyes"),  # hyphens for separators
        ("Green Eyes", "green_eyes"),
        ("shorthair", "short_hair"),  # run-together forms Danbooru lists as aliases
        ("blondehair", "blonde_hair"),
        ("t-shirt", "t-shirt"),  # a hyphenated tag stays
        ("doublebun", "double_bun"),  # unambiguous in the vocabulary
        ("oda-nobunaga-(koha-ace)", "oda_nobunaga_(koha-ace)"),  # separators swapped throughout a name
        ("code:002", "zero_two_(darling_in_the_franxx)"),  # a name with a colon, not a prompt weight
        ("reverse:1999", "reverse:1999"),
    ],
)
def test_real_spellings_resolve_to_canonical_tags(written, canonical, embedded_vocabulary):
    records = pl.DataFrame({"record_id": ["r"], "tags_raw": [f"smile, {written}"]})
    out, _ = clean_tags(records, {"tags": "tags_raw"}, ",", embedded_vocabulary)
    assert canonical in out.get_column("tags")[0].to_list()
    rewrites = out.get_column("rewrites")[0].to_list()
    spelled = written.lower().replace(" ", "_")
    assert (f"{spelled}={canonical}" in rewrites) == (spelled != canonical)  # every rewrite listed, nothing silent


def test_ambiguous_run_together_forms_stay_unknown():
    from charassets.domain.tags.vocabulary import Vocabulary

    raw = pl.DataFrame(
        {
            "tag": ["1girl", "ab_cd", "abc_d", "long_hair"],
            "category_code": [0, 0, 0, 0],
            "post_count": [9, 1, 1, 5],
            "aliases": ["", "", "", ""],
        }
    )
    vocabulary = Vocabulary.from_rows(raw)
    records = pl.DataFrame({"record_id": ["r"], "tags_raw": ["1girl, abcd, longhair"]})
    out, _ = clean_tags(records, {"tags": "tags_raw"}, ",", vocabulary)
    assert out.get_column("unknown_tags")[0].to_list() == ["abcd"]  # two tags fit: neither is chosen
    assert out.get_column("rewrites")[0].to_list() == ["longhair=long_hair"]  # one fits: resolved, and listed


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.floats(0.0, 1.0, allow_nan=False, width=32)),
        min_size=1,
        max_size=60,
    )
)
@settings(max_examples=200, deadline=None)
def test_noisy_or_equals_the_group_by_product_exactly(rows):
    """The column-wise noisy-or of the labels stage gives the same floats, in the same group order, as polars' group-by product."""
    from charassets.domain.tags.extraction import _noisy_or

    frame = pl.DataFrame(rows, schema={"rf": pl.UInt64, "vid": pl.UInt32, "confidence": pl.Float32}, orient="row").with_columns(
        pl.lit("v").alias("value"), pl.lit(None, dtype=pl.Int32).alias("ordinal")
    )
    reference = frame.group_by("rf", "vid", maintain_order=True).agg(
        (1 - (1 - pl.col("confidence").cast(pl.Float64)).product()).alias("confidence")
    )
    got = _noisy_or(frame, ["rf", "vid"], ["value", "ordinal"]).select("rf", "vid", "confidence")
    assert got.equals(reference)


def test_spelling_once_per_distinct_token_counts_every_row(danbooru_vocabulary):
    """Per-token steps run on distinct tokens, yet the counts weigh each by its rows (two records, same mojibake and alias)."""
    recs = pl.DataFrame({"record_id": ["a", "b"], "tags_raw": ["pokÃ©mon, gray hair, (smile:1.2)", "pokÃ©mon, gray hair, (smile:1.2)"]})
    out, stats = t.clean_tags(recs, {"tags": "tags_raw"}, ",", danbooru_vocabulary)
    # per record: one mojibake repair, one weight stripped, two aliases (pokémon -> pokemon, gray_hair -> grey_hair)
    assert (stats.tokens_in, stats.mojibake_repaired, stats.weights_stripped, stats.aliases_resolved) == (6, 2, 2, 4)
    assert out.get_column("general").to_list() == [["grey_hair", "smile"]] * 2
    assert out.get_column("copyright").to_list() == [["pokemon"]] * 2
