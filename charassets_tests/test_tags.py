"""Each tag-cleaning step alone, then the chain, on tags as they appear in the wild."""

from __future__ import annotations

import polars as pl
import pytest

from charassets.domain import tags as t


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
