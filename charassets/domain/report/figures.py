"""The dataset report: distributions, the long tail, label noise and examples, from every partition.

Figures come from lazy scans of the Delta tables aggregated with the streaming engine, or
(the per-field figures, the examples' rows) from reads of a bounded number of partitions at
a time, so memory grows with the number of distinct values (characters, tags) and with the
size of a partition, not with the number of records. ``dataset_figures`` returns the figures
as plain data (the JSON file); ``render`` draws and writes them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from concurrent.futures import wait
from datetime import UTC, datetime
from functools import partial
from typing import Any

import polars as pl

from charassets.domain.lake import Lake, partition_batches
from charassets.domain.lending import lent
from charassets.domain.ontology import Ontology
from charassets.domain.tags.extraction import UNKNOWN

FINAL = ("marts", "character_attributes")
TOP_VALUES = 15
N_EXAMPLES = 24
N_NOISE_EXAMPLES = 20


def _streamed(lf: pl.LazyFrame) -> pl.DataFrame:
    # no predicate pushdown into the Delta scan: polars cannot read Delta statistics of struct columns
    return lf.collect(engine="streaming", optimizations=pl.QueryOptFlags(predicate_pushdown=False))


def _overview(lake: Lake) -> dict[str, Any]:
    final = lake.scan(*FINAL)
    by_status = dict(_streamed(final.group_by("status").agg(pl.len())).sort("status").iter_rows())
    reasons = _streamed(
        final.filter(pl.col("status") == "rejected")
        .group_by(pl.col("reason").str.replace_all(r"(^|[\s(=:])\d+", "${1}N").alias("reason"))  # row numbers, not UTF-8
        .agg(pl.len().alias("n"))
        .sort("n", "reason", descending=[True, False])
        .head(20)
    )
    sources = _streamed(
        final.group_by("source").agg(pl.col("partition").n_unique().alias("partitions"), pl.len().alias("records")).sort("source")
    )
    out: dict[str, Any] = {
        "records": int(sum(by_status.values())),
        "by_status": {k: int(v) for k, v in by_status.items()},
        "reject_reasons": reasons.to_dicts(),
        "sources": sources.to_dicts(),
        "partitions": int(sources.get_column("partitions").sum()) if sources.height else 0,
        "duplicates": None,
    }
    if lake.exists("features", "image_clusters"):
        clusters = _streamed(lake.scan("features", "image_clusters").select("cluster_id", "cluster_size"))
        multi = clusters.filter(pl.col("cluster_size") > 1)
        out["duplicates"] = {
            "images": clusters.height,
            "clusters_with_several_images": multi.get_column("cluster_id").n_unique(),
            "images_in_such_clusters": multi.height,
        }
    return out


def _field_batch(ok: pl.DataFrame, ontology: Ontology) -> list[pl.DataFrame]:
    """One batch's per-field figures, to be summed: per field its counts, its values and its sources."""
    frame = ok.lazy()
    queries = []
    for f in ontology.fields:
        v = pl.col(f.key).struct
        multi = f.cardinality == "multi"
        unknown = (v.field("value").list.len() == 0) if multi else (v.field("value") == UNKNOWN)
        queries.append(
            frame.select(
                unknown.sum().cast(pl.Int64).alias("unknown"),
                pl.col("flags").list.contains(f"conflict_resolved:{f.key}").sum().cast(pl.Int64).alias("conflict_resolved"),
                (pl.col("flags").list.contains(f"conflict:{f.key}") | pl.col("flags").list.contains(f"several:{f.key}"))
                .sum()
                .cast(pl.Int64)
                .alias("conflicts"),
            )
        )
        values = frame.select(v.field("value").alias("value"))
        if multi:
            values = values.explode("value")
        queries.append(
            values.filter(pl.col("value").is_not_null() & (pl.col("value") != UNKNOWN))
            .group_by("value")
            .agg(pl.len().cast(pl.Int64).alias("n"))
        )
        queries.append(frame.filter(~unknown).group_by(v.field("source").alias("source")).agg(pl.len().cast(pl.Int64).alias("n")))
    return pl.collect_all(queries)


def _field_batches(lake: Lake) -> list[list[str]]:
    """The final table's partitions in batches of at most ``READ_BATCH_ROWS`` rows (a batch is read at once)."""
    counts = lake.partition_counts(*FINAL)
    return list(partition_batches(sorted(counts), counts))


def _field_batch_figures(lake: Lake, batch: list[str], ontology: Ontology) -> tuple[int, list[pl.DataFrame]]:
    """One batch of partitions: its ``ok`` rows and their per-field figures (``_field_batch``), to be summed."""
    ok = lake.scan(*FINAL, batch).filter(pl.col("status") == "ok").select("flags", *(f.key for f in ontology.fields)).collect()
    return ok.height, _field_batch(ok, ontology)


def _field_figures(lake: Lake, ontology: Ontology, batches: Iterable[tuple[int, list[pl.DataFrame]]] | None = None) -> dict[str, Any]:
    """Per field: unknown rate, value counts, the sources that decided it, conflicts.

    The final table is read in batches of partitions (only the ``ok`` rows and the columns these
    figures need), each batch's figures computed in one pass and summed: one read of the table
    instead of three scans per field, in memory bounded by the batch. The only predicates pushed
    into the Delta scan are on ``partition`` and ``status`` (plain strings), not on struct columns.
    ``batches``: each batch's ``_field_batch_figures`` when computed elsewhere (in lent workers).
    """
    if batches is None:  # one batch read at a time
        batches = (_field_batch_figures(lake, batch, ontology) for batch in _field_batches(lake))
    parts: list[list[pl.DataFrame]] = []
    n_ok = 0
    for rows, figures in batches:
        n_ok += rows
        parts.append(figures)
    fields: dict[str, Any] = {}
    for i, f in enumerate(ontology.fields):
        stats_frames = [p[3 * i] for p in parts]
        stats = pl.concat(stats_frames).sum().row(0, named=True) if stats_frames else {"unknown": 0, "conflict_resolved": 0, "conflicts": 0}
        counts = (
            pl.concat([p[3 * i + 1] for p in parts]).group_by("value").agg(pl.col("n").sum())
            if parts
            else pl.DataFrame(schema={"value": pl.String, "n": pl.Int64})
        )
        counts = counts.sort("n", "value", descending=[True, False])
        sources = (
            pl.concat([p[3 * i + 2] for p in parts]).group_by("source").agg(pl.col("n").sum())
            if parts
            else pl.DataFrame(schema={"source": pl.String, "n": pl.Int64})
        )
        fields[f.name] = {
            "key": f.key,
            "multi": f.cardinality == "multi",
            "records_ok": n_ok,
            "unknown": int(stats["unknown"] or 0),
            "unknown_rate": round((stats["unknown"] or 0) / n_ok, 4) if n_ok else None,
            "distinct_values": counts.height,
            "values": [
                {"value": val, "n": int(n), "share": round(n / n_ok, 4) if n_ok else None} for val, n in counts.head(TOP_VALUES).iter_rows()
            ],
            "sources": {str(s): int(n) for s, n in sources.sort("source", nulls_last=True).iter_rows()},
            "conflict_resolved": int(stats["conflict_resolved"] or 0),
            "in_post_conflicts": int(stats["conflicts"] or 0),
            "fill": list(f.fill),
        }
    return fields


def _coverage(counts: list[int], share: float) -> int:
    """How many of the largest counts make up ``share`` of the total."""
    total, running = sum(counts), 0
    for i, n in enumerate(counts, 1):
        running += n
        if running >= share * total:
            return i
    return len(counts)


def _long_tail(lake: Lake, heads: dict[str, list[dict]]) -> dict[str, Any]:
    ok = lake.scan(*FINAL).filter((pl.col("status") == "ok") & (pl.col("characters").list.len() == 1))
    chars = _streamed(ok.group_by(pl.col("characters").list.first().alias("character")).agg(pl.len().alias("n"))).sort(
        "n", "character", descending=[True, False]
    )
    counts = chars.get_column("n").to_list()
    tags = pl.DataFrame(schema={"tag": pl.String, "n": pl.UInt32})
    if lake.exists("clean", "tags"):
        tags = _streamed(
            lake.scan("clean", "tags")
            .select(pl.col("tags").alias("tag"))
            .explode("tag")
            .drop_nulls()
            .group_by("tag")
            .agg(pl.len().alias("n"))
        )
        tags = tags.sort("n", "tag", descending=[True, False])
    return {
        "characters": {
            "distinct": chars.height,
            "single_character_records": int(sum(counts)),
            "cover_50": _coverage(counts, 0.5),
            "cover_90": _coverage(counts, 0.9),
            "under_5_records": int(sum(1 for n in counts if n < 5)),
            "top": chars.head(10).to_dicts(),
            "rank_frequency": counts,
        },
        "tags": {"distinct": tags.height, "top": tags.head(10).to_dicts(), "rank_frequency": tags.get_column("n").to_list()},
        "heads": heads,
    }


IN_POST_FLAGS = r"^(conflict|several|conflict_resolved):"  # what a post's own tags disagree on
NOISE_FLAGS = r"^(contradicts_profile|conflict|several|conflict_resolved):"  # and what disagrees with the profile


def _label_noise(lake: Lake, ontology: Ontology) -> dict[str, Any]:
    """Contradictions with the character's profile and in-post conflicts, per field, with examples.

    One streamed scan keeps the ok records' flags of these kinds (a small share of all flags); the
    examples' tags and values are then read from the partitions that hold them only.
    """
    flags = _streamed(
        lake.scan(*FINAL)
        .filter(pl.col("status") == "ok")
        .select("record_id", "partition", "flags")
        .explode("flags")
        .filter(pl.col("flags").str.contains(NOISE_FLAGS))
    )
    contra = flags.filter(pl.col("flags").str.starts_with("contradicts_profile:")).with_columns(
        pl.col("flags").str.extract(r"^contradicts_profile:([a-z_]+)=(.*)$", 1).alias("key"),
        pl.col("flags").str.extract(r"^contradicts_profile:([a-z_]+)=(.*)$", 2).alias("profile_value"),
    )
    by_field = dict(contra.group_by("key").agg(pl.len()).sort("key").iter_rows())
    conflicts = (
        flags.filter(pl.col("flags").str.contains(IN_POST_FLAGS))
        .group_by(pl.col("flags").str.extract(r":([a-z_]+)$", 1).alias("key"), pl.col("flags").str.extract(r"^([a-z_]+):", 1).alias("kind"))
        .agg(pl.len().alias("n"))
        .sort("key", "kind")
    )
    names = {f.key: f.name for f in ontology.fields}
    lowest: list[dict] = []
    if lake.exists("marts", "character_profiles"):
        prof = lake.read("marts", "character_profiles")
        if prof.height:
            lowest = (
                prof.filter((pl.col("records") >= 5) & (pl.col("value") != "__stated__"))
                .sort("agreement", "records", descending=[False, True])
                .head(15)
                .select(
                    "character",
                    pl.col("field").replace_strict(names, default=pl.col("field")).alias("field"),
                    "value",
                    "agreement",
                    "records",
                )
                .to_dicts()
            )
    examples = contra.sort("key", "record_id").group_by("key", maintain_order=True).head(4).head(N_NOISE_EXAMPLES)
    if examples.height and lake.exists("clean", "tags"):
        held = examples.select("record_id", "partition").unique()
        where = sorted(held.get_column("partition").unique().to_list())  # at most N_NOISE_EXAMPLES partitions
        tags = (
            lake.scan("clean", "tags", partitions=where)
            .select("record_id", "partition", "tags")
            .join(held.lazy(), on=["record_id", "partition"])
            .collect()
        )
        values = (
            lake.scan(*FINAL, partitions=where)
            .filter(pl.col("status") == "ok")  # a rejected row may carry an ok record's id (a repeated id) in its partition
            .select("record_id", "partition", *[pl.col(k).struct.field("value").cast(pl.String).alias(k) for k in by_field if k in names])
            .join(held.lazy(), on=["record_id", "partition"])
            .collect()
        )
        examples = examples.join(tags, on=["record_id", "partition"], how="left").join(values, on=["record_id", "partition"], how="left")
        rows = [
            {
                "record_id": r["record_id"],
                "field": names.get(r["key"], r["key"]),
                "record_value": r.get(r["key"]),
                "profile_value": r["profile_value"],
                "tags": ", ".join(r["tags"] or []),
            }
            for r in examples.iter_rows(named=True)
        ]
    else:
        rows = []
    return {
        "contradictions_by_field": {names.get(k, k): int(v) for k, v in by_field.items()},
        "in_post_conflicts": [{"field": names.get(k, k), "kind": kind, "n": int(n)} for k, kind, n in conflicts.iter_rows()],
        "lowest_agreement": lowest,
        "examples": rows,
    }


def _thumbnails(lake: Lake, record_ids: list[str]) -> dict[str, str]:
    if not record_ids or not lake.exists("raw", "images"):
        return {}
    found = _streamed(lake.scan("raw", "images").filter(pl.col("record_id").is_in(record_ids)).select("record_id", "thumbnail"))
    return {rid: "data:image/webp;base64," + base64.b64encode(t).decode() for rid, t in found.iter_rows() if t}


EXAMPLE_KINDS: list[tuple[str, int, pl.Expr]] = [
    ("image only", 5, pl.col("flags").list.contains("image_only")),
    (
        "conflict",
        5,
        pl.col("flags").list.eval(pl.element().str.contains(r"^(conflict|several|conflict_resolved|contradicts_profile)")).list.any(),
    ),
    ("ambiguous", 4, pl.col("status") == "ambiguous"),
    ("ok with an image", 3, (pl.col("status") == "ok") & pl.col("image").is_not_null()),
    ("no character", 1, pl.col("status") == "no_character"),
    ("rejected", 1, pl.col("status") == "rejected"),
    ("ok", N_EXAMPLES, pl.col("status") == "ok"),  # fills what the other kinds left
]


def _examples(lake: Lake, ontology: Ontology) -> list[dict[str, Any]]:
    """24 records covering image-only, conflicting, ambiguous and ok records (the first of each kind by record id).

    Which records: a narrow scan per kind (the id, its partition, what the kind tests); then the
    whole rows, read one partition that holds them at a time. Sorting every column of every
    row to keep 24 took most of the report's time at 5M records.
    """
    final = lake.scan(*FINAL)
    chosen: list[tuple[str, str, int]] = []  # (kind, partition, row index): rejected rows have no record id
    seen: set[str | None] = set()
    for kind, quota, cond in EXAMPLE_KINDS:
        want = min(quota, N_EXAMPLES - len(chosen))
        if want <= 0:
            break
        ids = _streamed(
            final.filter(cond)
            .select("record_id", "partition", "row_index")
            .sort("record_id", "partition", "row_index")  # a total order: rejected rows share a null id
            .head(want + len(seen))
        )
        for rid, partition, row in ids.iter_rows():
            if rid in seen or want == 0:
                continue
            seen.add(rid)
            want -= 1
            chosen.append((kind, partition, row))
    keys = pl.DataFrame(
        {"partition": [c[1] for c in chosen], "row_index": [c[2] for c in chosen]}, schema_overrides={"row_index": pl.Int64}
    )
    whole = {}
    for partition in sorted(set(keys.get_column("partition"))):  # one partition in memory at a time
        rows = lake.read(*FINAL, [partition])
        wanted = keys.filter(pl.col("partition") == partition).cast({"row_index": rows.schema["row_index"]})
        for r in rows.join(wanted, on=["partition", "row_index"], how="semi").iter_rows(named=True):
            whole[(r["partition"], r["row_index"])] = r
    picked: list[dict] = []
    for kind, partition, row in chosen:
        r = whole[(partition, row)]
        picked.append(
            {
                "kind": kind,
                "record_id": r["record_id"],
                "status": r["status"],
                "reason": r["reason"],
                "flags": list(r["flags"] or []),
                "characters": list(r["characters"] or []),
                "attributes": {f.name: r[f.key] for f in ontology.fields if r.get(f.key) is not None},
                "image_ref": (r["image"] or {}).get("ref"),
            }
        )
    thumbs = _thumbnails(lake, [p["record_id"] for p in picked if p["image_ref"]])
    for p in picked:
        p["thumbnail"] = thumbs.get(p["record_id"])
    return picked


def dataset_figures(lake: Lake, ontology: Ontology, heads: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    """Every figure of the report, as plain data (what the JSON file holds).

    With worker processes lent (``lending``), the sections are computed in them, the per-field figures one batch
    of partitions per task. What comes back is aggregates, bounded by the distinct values (characters, tags, field
    values) and the 24 examples, not by the records, so this process's memory does not grow with the table (at 5M
    records, these scans in this process raised its peak RSS from 1.4 to 2.5 GB). Else here, one after another.
    """
    pool, _ = lent()
    sections: dict[str, Callable[[], Any]] = {
        "long_tail": partial(_long_tail, lake, heads or {}),
        "examples": partial(_examples, lake, ontology),
        "label_noise": partial(_label_noise, lake, ontology),
        "overview": partial(_overview, lake),
    }
    figures: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "lake": lake.root}
    if pool is None:
        done = {name: section() for name, section in sections.items()}
        fields = _field_figures(lake, ontology)
    else:  # the longest sections first, then the batches: the workers stay busy to the end
        futures = {name: pool.submit(section) for name, section in sections.items()}
        batches = [pool.submit(_field_batch_figures, lake, batch, ontology) for batch in _field_batches(lake)]
        try:
            fields = _field_figures(lake, ontology, (b.result() for b in batches))
            done = {name: future.result() for name, future in futures.items()}
        except BaseException:  # no scan outlives the report: the queued ones cancelled, the running ones waited for
            every = [*futures.values(), *batches]
            for future in every:
                future.cancel()
            wait(every)
            raise
    return {**figures, "overview": done["overview"], "fields": fields, **{k: done[k] for k in ("long_tail", "label_noise", "examples")}}
