"""Deterministic demo data: realistic, messy Danbooru-style tag records at any size.

Two sources, as real collections come:
- ``demo_ordered``: Parquet shards with one ordered, comma-separated prompt-style tag
  string per row (``1girl, hatsune miku, vocaloid, artist, ..., general, newest, masterpiece``);
- ``demo_danbooru``: JSONL posts with Danbooru's per-category, space-separated tag strings.

Records mix named characters with their usual look (a random subset of it), invented
unnamed characters, several-character and no-character posts, frequent scene tags, meta
and quality tags, alias spellings, prompt weights, escaped parentheses, odd case and
spacing, duplicates, mojibake, and a small share of malformed rows of every kind.
The same seed and size always give the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from charassets.domain.demo.catalogue import (
    ACCESSORIES,
    ALIASES,
    BODY,
    EXPRESSIONS,
    EXTRA_SERIES,
    EYE_COLORS,
    HAIR_COLORS,
    LENGTHS,
    META,
    OUTFITS,
    QUALITY,
    RARE,
    RATINGS,
    SCENE,
    SCENERY,
    SHARD_ROWS,
    STYLES,
    UNLISTED,
    Character,
    artist_names,
    load_characters,
)
from charassets.domain.images.samples import add_demo_images
from charassets.domain.ontology import Ontology


class _RecordMaker:
    """Draws one record's tags by category; formatting is done per layout."""

    def __init__(self, seed: int, characters: list[Character]):
        # the stdlib generator: scalar draws cost far less than numpy's, which matters at millions of rows
        self.rng = random.Random(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        self.characters = characters
        weights = 1.0 / np.arange(1, len(characters) + 1) ** 0.8  # a few popular characters, a long tail
        self.char_cum = np.cumsum(weights / weights.sum()).tolist()
        self.artists = artist_names()

    def _pick(self, pool: list[str] | tuple[str, ...], k: int) -> list[str]:
        k = min(k, len(pool))
        return self.rng.sample(pool, k) if k else []

    def _invented(self) -> tuple[str, list[str]]:
        r = self.rng
        subject = "1girl" if r.random() < 0.75 else "1boy"
        look = [f"{r.choice(HAIR_COLORS)}_hair", f"{r.choice(EYE_COLORS)}_eyes", str(r.choice(LENGTHS))]
        look += self._pick(STYLES, r.randrange(0, 3))
        if r.random() < 0.15:
            look += self._pick(BODY, 1)
        if r.random() < 0.08:
            look += self._pick(RARE, 1)
        return subject, look

    def _character(self) -> tuple[str, list[str], list[str], list[str]]:
        """(subject, character tags, series tags, look tags) of one character."""
        if self.rng.random() < 0.7:
            c = self.rng.choices(self.characters, cum_weights=self.char_cum)[0]
            kept = [t for t in c.look if self.rng.random() < 0.85]
            return c.subject, [c.tag], [c.series] if c.series else [], kept
        subject, look = self._invented()
        return subject, [], [str(self.rng.choice(EXTRA_SERIES))] if self.rng.random() < 0.3 else [], look

    def record(self) -> dict[str, list[str]]:
        r = self.rng
        kind = r.random()
        rec: dict[str, list[str]] = {"subject": [], "character": [], "copyright": [], "artist": [], "general": [], "meta": []}
        if kind < 0.78:  # one character
            subject, chars, series, look = self._character()
            rec["subject"] = [subject] + (["solo"] if r.random() < 0.8 else [])
            if kind > 0.76:  # 'solo' only, no count tag
                rec["subject"] = ["solo"]
            rec["character"], rec["copyright"], rec["general"] = chars, series, look
        elif kind < 0.93:  # several characters
            a, b = self._character(), self._character()
            girls = [s for s in (a[0], b[0]) if s == "1girl"]
            rec["subject"] = (
                ["2girls", "multiple_girls"] if len(girls) == 2 else (["2boys", "multiple_boys"] if not girls else ["1girl", "1boy"])
            )
            rec["character"], rec["copyright"] = a[1] + b[1], list(dict.fromkeys(a[2] + b[2]))
            rec["general"] = a[3] + b[3]
        elif kind < 0.98:  # no character
            rec["subject"] = ["no_humans"]
            rec["general"] = self._pick(SCENERY[1:], r.randrange(2, 6))
        else:  # describes someone without saying how many
            rec["general"] = self._invented()[1]
        if kind < 0.93:
            rec["general"] += self._pick(SCENE, r.randrange(3, 10))
            rec["general"] += self._pick(EXPRESSIONS, r.randrange(0, 3))
            rec["general"] += self._pick(OUTFITS, r.randrange(0, 3))
            rec["general"] += self._pick(ACCESSORIES, r.randrange(0, 2))
            if r.random() < 0.05:
                rec["general"] += self._pick(UNLISTED, 1)
        rec["artist"] = [self.artists[r.randrange(len(self.artists))]] if r.random() < 0.9 else []
        rec["meta"] = self._pick(META, r.randrange(0, 3))
        rec["general"] = list(dict.fromkeys(rec["general"]))
        return rec

    # --- messiness -----------------------------------------------------------
    def messy(self, tag: str, prompt_style: bool) -> str:
        r = self.rng.random()
        if tag in ALIASES and r < 0.08:
            tag = ALIASES[tag]
        if prompt_style:
            tag = tag.replace("_", " ").replace("(", "\\(").replace(")", "\\)") if self.rng.random() < 0.97 else tag
        if r > 0.985:
            tag = tag.upper() if r > 0.995 else tag.title()
        elif 0.95 < r < 0.965 and prompt_style:
            tag = f"({tag}:{self.rng.choice([0.8, 1.1, 1.2, 1.3])})"
        elif 0.94 < r < 0.95:
            tag = f"  {tag} "
        if "é" in tag and self.rng.random() < 0.5:
            tag = tag.encode("utf-8").decode("latin-1")  # mojibake, as a wrong codec leaves it
        return tag


def _ordered_row(maker: _RecordMaker, rec: dict[str, list[str]], rid: int) -> dict:
    general = list(rec["general"])
    r = maker.rng.random()
    if r < 0.03 and general:
        general.insert(maker.rng.randrange(len(general)), general[0])  # duplicate
    tags = rec["subject"] + rec["character"] + rec["copyright"] + rec["artist"] + general
    tags = [maker.messy(t, prompt_style=True) for t in tags]
    if r > 0.97:
        tags.insert(maker.rng.randrange(len(tags) + 1), "")  # empty token: ", ,"
    rating = str(maker.rng.choice(list(RATINGS)))
    tail = [RATINGS[rating]] + maker._pick(QUALITY, maker.rng.randrange(0, 4))
    return {"id": rid, "tags": ", ".join(tags + tail), "rating": rating}


def _danbooru_row(maker: _RecordMaker, rec: dict[str, list[str]], rid: int) -> dict:
    def s(tags: list[str]) -> str:
        return " ".join(maker.messy(t, prompt_style=False).strip() for t in tags)

    return {
        "id": rid,
        "tag_string_general": s(rec["subject"] + rec["general"]),
        "tag_string_character": s(rec["character"]),
        "tag_string_copyright": s(rec["copyright"]),
        "tag_string_artist": s(rec["artist"]),
        "tag_string_meta": s(rec["meta"]),
        "rating": str(maker.rng.choice(list(RATINGS))),
    }


def _malformed_ordered(maker: _RecordMaker, rid: int) -> dict:
    kind = maker.rng.randrange(6)
    return [
        {"id": rid, "tags": None, "rating": "g"},
        {"id": rid, "tags": "", "rating": "g"},
        {"id": rid, "tags": " , ,, ", "rating": "s"},
        {"id": None, "tags": "1girl, solo, long hair", "rating": "g"},
        {"id": rid - 1, "tags": "1girl, duplicate id", "rating": "g"},
        {"id": rid, "tags": ", ".join(["long hair"] * 4000), "rating": "g"},
    ][kind]


def _malformed_jsonl(maker: _RecordMaker, rid: int) -> str:
    kind = maker.rng.randrange(6)
    return [
        f'{{"id": {rid}, "tag_string_general": "1girl solo long_hair"',  # truncated
        f'[{rid}, "1girl solo"]',
        json.dumps({"id": rid, "tag_string_general": 12345}),
        json.dumps({"tag_string_general": "1girl solo"}),
        "\x00\x01garbage\xff line",
        json.dumps({"id": rid, "tag_string_general": "   "}),
    ][kind]


def _rows(n: int, seed, characters: list[Character], malformed_rate: float, layout: str, first: int = 0) -> Iterator[dict | str]:
    maker = _RecordMaker(seed, characters)
    base = 1_000_000 * (1 if layout == "ordered" else 2) + first
    for i in range(n):
        rid = base + i
        if maker.rng.random() < malformed_rate and i > 0:
            yield _malformed_ordered(maker, rid) if layout == "ordered" else _malformed_jsonl(maker, rid)
            continue
        rec = maker.record()
        yield _ordered_row(maker, rec, rid) if layout == "ordered" else _danbooru_row(maker, rec, rid)


def _write_shard(layout: str, path: Path, n: int, first: int, seed: int, shard: int, characters, malformed_rate: float) -> int:
    """One file of demo records, from its own random stream (so shards can be written in parallel)."""
    rows = _rows(n, [seed, LAYOUTS.index(layout), shard], load_characters(characters), malformed_rate, layout, first)
    if layout == "ordered":
        pl.DataFrame(list(rows), schema={"id": pl.Int64, "tags": pl.String, "rating": pl.String}).write_parquet(path, row_group_size=10_000)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n")
    return n


LAYOUTS = ("ordered", "danbooru")


def generate(
    out_dir: str | Path,
    n: int = 24_000,
    seed: int = 0,
    characters: str | Path | None = None,
    malformed_rate: float = 0.005,
    rows_per_partition: int = 5_000,
    danbooru_share: float = 0.2,
    workers: int = 1,
    images: bool = False,
) -> Path:
    """Write ``n`` demo records under ``out_dir`` and a ``sources.yaml`` describing them.

    ``images``: also the pictures the project ships (``images.samples``), as an image-folder
    source, so the demo shows the image path too.

    Records go to files of at most ``SHARD_ROWS`` (Parquet for the ordered layout, JSONL for
    the Danbooru one), each drawn from its own seeded stream: the output depends only on the
    arguments, not on ``workers`` (how many processes write the files).
    """
    out = Path(out_dir)
    n_dan = int(n * danbooru_share)
    n_ord = n - n_dan
    jobs = []
    for layout, total, pattern in (("ordered", n_ord, "part-{:05d}.parquet"), ("danbooru", n_dan, "posts-{:05d}.jsonl")):
        (out / layout).mkdir(parents=True, exist_ok=True)
        for shard, first in enumerate(range(0, total, SHARD_ROWS)):
            size = min(SHARD_ROWS, total - first)
            jobs.append((layout, out / layout / pattern.format(shard), size, first, seed, shard, characters, malformed_rate))
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_shard, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            _write_shard(*job)
    sources = [
        {"name": "demo_ordered", "uri": "ordered/*.parquet", "layout": "ordered", "rows_per_partition": rows_per_partition},
        {"name": "demo_danbooru", "uri": "danbooru/*.jsonl", "layout": "danbooru", "rows_per_partition": rows_per_partition},
    ]
    config = {"sources": [s for s, count in zip(sources, (n_ord, n_dan), strict=True) if count]}
    if images:
        config = add_demo_images(out, config)
    (out / "sources.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "MANIFEST.json").write_text(json.dumps({"records": n, "seed": seed, "malformed_rate": malformed_rate}))
    return out / "sources.yaml"


def embedded_vocabulary_rows(ontology: Ontology | None = None) -> list[tuple[str, int, int, str]]:
    """The project's small vocabulary: every tag the ontology and the demo use, with aliases.

    Rows are ``(tag, category code, post_count (0: unknown), aliases)`` in the
    tagcomplete format; ``make vocab`` writes them to ``charassets/data/vocabulary.csv``.
    """
    ontology = ontology or Ontology.load()
    cat = load_characters()
    general = (
        set(ontology.rules.get_column("tag").to_list())
        | set(ontology.subjects.counts)
        | set(ontology.subjects.single)
        | set(ontology.subjects.none)
    )
    for group in (SCENE, EXPRESSIONS, OUTFITS, ACCESSORIES, BODY, RARE, SCENERY, STYLES, LENGTHS):
        general |= set(group)
    general |= {f"{c}_hair" for c in HAIR_COLORS} | {f"{c}_eyes" for c in EYE_COLORS}
    for c in cat:
        general |= set(c.look)
    rows: dict[str, tuple[int, list[str]]] = {t: (0, []) for t in sorted(general)}
    rows.update({c.tag: (4, []) for c in cat})
    rows.update({s: (3, []) for s in sorted({c.series for c in cat} | set(EXTRA_SERIES))})
    rows.update({a: (1, []) for a in artist_names()})
    rows.update({m: (5, []) for m in META})
    for canonical, alias in ALIASES.items():
        rows[canonical][1].append(alias)
    return [(t, code, 0, ",".join(aliases)) for t, (code, aliases) in sorted(rows.items())]


def embedded_feature_tags(sample: int = 20_000) -> list[str]:
    """Every tag a record vector of the embedded default pools: the general, character and copyright tags of the
    project's vocabulary and the demo's Danbooru-only tags, and what ``sample`` generated demo rows (malformed ones
    included) clean to. The set the bundled tag vectors cover (``make vocab``)."""
    from charassets.domain.models.features import POOLED_CATEGORIES
    from charassets.domain.tags.cleaning import clean_tags
    from charassets.domain.tags.vocabulary import Vocabulary

    written = sorted({t for t, code, _, _ in embedded_vocabulary_rows() if code in (0, 3, 4)} | set(UNLISTED))
    generated = [row["tags"] for row in _rows(sample, [0], load_characters(), 0.05, "ordered") if isinstance(row, dict) and row["tags"]]
    texts = written + generated
    records = pl.DataFrame({"record_id": [str(i) for i in range(len(texts))], "tags_raw": texts})
    clean, _ = clean_tags(records, {"tags": "tags_raw"}, ", ", Vocabulary.embedded())
    pooled = clean.select(pl.concat_list(*POOLED_CATEGORIES).explode().drop_nulls().unique()).to_series()
    return sorted(pooled.to_list())


def write_embedded_vocabulary(path: str | Path) -> None:
    pl.DataFrame(embedded_vocabulary_rows(), schema=["tag", "category", "post_count", "aliases"], orient="row").write_csv(
        path, include_header=False, quote_style="non_numeric"
    )
