"""The record path as plain functions, one per stage; assets and the CLI call these.

raw records --clean_stage--> clean tags --label_stage--> tag attributes --mart_stage--> attribute table
                                     image signals, image heads --apply_images--^
"""

from __future__ import annotations

import json

import polars as pl

from charassets.domain.ontology import Ontology
from charassets.domain.schema import IMAGE_DTYPE
from charassets.domain.sources import SourceSpec
from charassets.domain.tags.cleaning import CATEGORY_COLUMNS, CleaningStats, clean_tags
from charassets.domain.tags.extraction import UNKNOWN, extract_attributes
from charassets.domain.tags.vocabulary import Vocabulary

KEY_COLUMNS = ("record_id", "source_id", "source", "partition", "row_index")
EMPTY_LIST = pl.lit([], dtype=pl.List(pl.String))


def clean_stage(records: pl.DataFrame, spec: SourceSpec, vocabulary: Vocabulary) -> tuple[pl.DataFrame, CleaningStats]:
    """Raw records of one source -> one row of canonical tag lists per record."""
    columns = {k: f"{k}_raw" for k in ("tags", *CATEGORY_COLUMNS) if k in spec.mapping.tag_columns()}
    clean, stats = clean_tags(records, columns, spec.tag_separator, vocabulary)
    return records.select(*KEY_COLUMNS, "rating").join(clean, on="record_id", how="left", maintain_order="left"), stats


def label_stage(clean: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """Clean tags -> status, subject count, flags and one attribute struct per field."""
    labels = extract_attributes(clean, ontology)
    return clean.select(*KEY_COLUMNS).join(labels, on="record_id", how="left", maintain_order="left")


HEAD_FILE_MIN_SUPPORT = 20  # records with tag evidence a head class needs in this partition to be verified
HEAD_FILE_PRECISION = 0.9


def _value(value: pl.Expr, confidence: pl.Expr, evidence: pl.Expr, source: str) -> pl.Expr:
    """The attribute struct ``{value, confidence, evidence, source}``."""
    return pl.struct(
        value.alias("value"),
        confidence.cast(pl.Float32).round(4).alias("confidence"),
        evidence.alias("evidence"),
        pl.lit(source).alias("source"),
    )


def _conflict_candidates(df: pl.DataFrame, f, ontology: Ontology) -> pl.DataFrame:
    """``record_id, _cands``: the values a record's evidence tags name for a field it could not decide (conflict or several)."""
    flagged = df.filter(pl.col("flags").list.contains(f"conflict:{f.key}") | pl.col("flags").list.contains(f"several:{f.key}"))
    long = flagged.select("record_id", pl.col(f.key).struct.field("evidence").alias("tag")).explode("tag").drop_nulls("tag")
    if long.height == 0:
        return pl.DataFrame(schema={"record_id": pl.String, "_cands": pl.List(pl.String)})
    rules = ontology.rules_for(long.get_column("tag")).filter((pl.col("field") == f.name) & (pl.col("rank") >= 1))
    return long.join(rules.select("tag", "value"), on="tag").group_by("record_id").agg(pl.col("value").unique().alias("_cands"))


def verified_head_classes(labels: pl.DataFrame, predictions: pl.DataFrame, key: str) -> list[str]:
    """Head classes that hold their precision on *this* data: checked against the records whose tags state the field.

    Head predictions are made with each record's own evidence tags masked out, so on
    records with tag evidence they are an honest test of the head on data like the
    records it would fill. A class fills only where, among this partition's tag-labelled
    records, its confident predictions were right at least ``HEAD_FILE_PRECISION`` of
    the time over at least ``HEAD_FILE_MIN_SUPPORT`` of them: a head trained on other
    data (the demo's, say) does not fill a file it does not fit.
    """
    v = pl.col(key).struct
    joined = (
        labels.filter((pl.col("status") == "ok") & (v.field("source") == "tags"))
        .select("record_id", v.field("value").alias("truth"))
        .join(
            predictions.select(
                "record_id", pl.col(key).struct.field("value").alias("pred"), pl.col(key).struct.field("above_threshold").alias("above")
            ),
            on="record_id",
        )
    )
    stats = (
        joined.filter(pl.col("above").fill_null(False))
        .group_by("pred")
        .agg(pl.len().alias("n"), (pl.col("pred") == pl.col("truth")).mean().alias("precision"))
        .filter((pl.col("n") >= HEAD_FILE_MIN_SUPPORT) & (pl.col("precision") >= HEAD_FILE_PRECISION))
    )
    return stats.get_column("pred").to_list()


def fill_gaps(labels: pl.DataFrame, ontology: Ontology, profiles: pl.DataFrame | None, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Decide what the tags left open, in order of trust, within each field's ``fill`` policy.

    Per single-valued field:
    1. tags: the tag value stands;
    2. identity: where the tags conflict (``short hair`` + ``long hair``) or name several
       values, and the character's profile supports one of them, that one is taken
       (source ``tags``, evidence the tags plus ``profile:<character>``, flag
       ``conflict_resolved:<key>`` instead of ``conflict:``/``several:``); no support, no change;
    3. profile: a field with no tag evidence takes the character's profile value when its
       confidence clears the field's fill threshold (both chosen on data, see ``profiles``);
    4. head: else a champion head's value, where its class clears its own threshold and
       holds its precision on this partition's tag-labelled records (``verified_head_classes``).
    Multi-valued fields with ``profile`` in their policy take the profile's values when the
    tags give none. A record whose tags contradict a confident profile is flagged
    ``contradicts_profile:<key>=<profile value>``.
    """
    from charassets.domain.tags.profiles import usable

    ok = pl.col("status") == "ok"
    df = labels.with_columns(pl.when(pl.col("characters").list.len() == 1).then(pl.col("characters").list.first()).alias("_character"))
    prof = usable(profiles) if profiles is not None and profiles.height else None
    for f in [f for f in ontology.fields if f.values]:
        cur = pl.col(f.key)
        value, evidence = cur.struct.field("value"), cur.struct.field("evidence")
        use_profile = prof is not None and "profile" in f.fill
        use_head = predictions is not None and "head" in f.fill and f.key in predictions.columns
        if f.cardinality == "multi":
            if not use_profile:
                continue
            p = (
                prof.filter(pl.col("field") == f.key)
                .group_by("character")
                .agg(pl.col("value").sort().alias("_pv"), pl.col("confidence").min().alias("_pc"))
            )
            df = df.join(p.rename({"character": "_character"}), on="_character", how="left", maintain_order="left")
            empty = ok & (value.list.len() == 0) & (evidence.list.len() == 0) & pl.col("_pv").is_not_null()
            filled = _value(pl.col("_pv"), pl.col("_pc"), pl.concat_list(pl.lit("profile:") + pl.col("_character")), "profile")
            df = df.with_columns(pl.when(empty).then(filled).otherwise(cur).alias(f.key)).drop("_pv", "_pc")
            continue
        no_evidence = ok & (value == UNKNOWN) & (evidence.list.len() == 0)
        candidates: list[tuple[pl.Expr, pl.Expr]] = []
        if use_profile:
            p = prof.filter(pl.col("field") == f.key).select(
                pl.col("character").alias("_character"), pl.col("value").alias("_pv"), pl.col("confidence").alias("_pc")
            )
            df = df.join(p, on="_character", how="left", maintain_order="left")
            df = df.join(_conflict_candidates(df, f, ontology), on="record_id", how="left", maintain_order="left")
            resolved = ok & pl.col("_pv").is_not_null() & pl.col("_cands").list.contains(pl.col("_pv")).fill_null(False)
            df = df.with_columns(
                pl.when(resolved)
                .then(
                    pl.concat_list(
                        pl.col("flags").list.eval(pl.element().filter(~pl.element().is_in([f"conflict:{f.key}", f"several:{f.key}"]))),
                        pl.lit([f"conflict_resolved:{f.key}"]),
                    )
                )
                .otherwise(pl.col("flags"))
                .alias("flags"),
                pl.when(resolved)
                .then(_value(pl.col("_pv"), pl.col("_pc"), pl.concat_list(evidence, pl.lit("profile:") + pl.col("_character")), "tags"))
                .otherwise(cur)
                .alias(f.key),
            )
            candidates.append(
                (
                    no_evidence & pl.col("_pv").is_not_null(),
                    _value(pl.col("_pv"), pl.col("_pc"), pl.concat_list(pl.lit("profile:") + pl.col("_character")), "profile"),
                )
            )
            contradiction = (
                ok
                & (value != UNKNOWN)
                & pl.col("_pv").is_not_null()
                & (value != pl.col("_pv"))
                & ~pl.col("flags").list.contains(f"several:{f.key}")  # several values named: not a contradiction of one
            )
            df = df.with_columns(
                pl.when(contradiction)
                .then(pl.concat_list(pl.col("flags"), pl.concat_list(pl.lit(f"contradicts_profile:{f.key}=") + pl.col("_pv"))))
                .otherwise(pl.col("flags"))
                .alias("flags")
            )
        if use_head:
            allowed = verified_head_classes(labels, predictions, f.key)
            h = predictions.select("record_id", pl.col(f.key).alias("_h"))
            df = df.join(h, on="record_id", how="left", maintain_order="left")
            hv = pl.col("_h").struct
            fires = hv.field("above_threshold").fill_null(False) & hv.field("value").is_in(allowed)
            candidates.append(
                (
                    no_evidence & fires,
                    _value(hv.field("value"), hv.field("confidence"), pl.concat_list(pl.lit("head:") + hv.field("model")), "head"),
                )
            )
        if candidates:
            expr = pl.when(candidates[0][0]).then(candidates[0][1])
            for cond, val in candidates[1:]:
                expr = expr.when(cond).then(val)
            df = df.with_columns(expr.otherwise(cur).alias(f.key))
        df = df.drop([c for c in ("_pv", "_pc", "_cands", "_h") if c in df.columns])
    return df.drop("_character")


def _empty_attribute(spec) -> dict:
    return {"value": [] if spec.cardinality == "multi" else UNKNOWN, "confidence": 0.0, "evidence": [], "source": None}


def apply_images(
    labels: pl.DataFrame,
    ontology: Ontology,
    tagless: pl.DataFrame,
    signals: pl.DataFrame | None = None,
    image_rejects: pl.DataFrame | None = None,
    image_predictions: pl.DataFrame | None = None,
    images: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Reconcile each record's image with its tags (``reconcile``: tags win, the image fills and flags).

    ``tagless`` lists the records without a single tag: for those the image alone decides the
    status, subject count and attributes, and an image that could not be decoded makes the
    record ``rejected`` with the reason. A record with tags keeps its tag status; a confident
    image value fills a field the tags leave unknown (and replaces a text head's guess: the
    image is a measurement, the head an inference from other tags), a differing one is
    flagged ``image_disagrees:<key>=<value>``, several faces ``image_shows_several``. Fields
    still unknown on an ``ok`` record take a confident image-head prediction (``image_head``).
    Every record with an image gets its facts in ``image`` (``images``: ``raw/images`` rows).
    """
    from charassets.domain.images.signals import ImageSignals, reconcile

    labels = labels.with_columns(pl.lit(None, dtype=pl.String).alias("reason")) if "reason" not in labels.columns else labels
    sig = {} if signals is None else {r["record_id"]: r for r in signals.iter_rows(named=True)}
    bad = {} if image_rejects is None else dict(image_rejects.select("record_id", "reason").iter_rows())
    if not sig and not bad:
        return labels
    no_tags = set(tagless.get_column("record_id").to_list())
    heads: dict[str, dict[str, dict]] = {}
    if image_predictions is not None:
        keys = [f.key for f in ontology.fields if f.key in image_predictions.columns]
        for row in image_predictions.filter(pl.col("record_id").is_in(list(sig))).iter_rows(named=True):
            heads[row["record_id"]] = {k: row[k] for k in keys if row[k] is not None}
    ordered = labels.with_row_index("_order")
    touched = ordered.filter(pl.col("record_id").is_in(list(sig) + list(bad)))
    spec = {f.key: f for f in ontology.fields}
    rows = []
    for row in touched.iter_rows(named=True):
        rid, flags = row["record_id"], list(row["flags"] or [])
        if rid in bad:
            if rid in no_tags:
                row.update(status="rejected", reason=f"image: {bad[rid]}", subject_count=None)
                row.update({f.key: None for f in ontology.fields})
                flags = []
            else:
                flags.append("image_rejected")
            rows.append({**row, "flags": flags})
            continue
        s = sig[rid]
        image = ImageSignals(s["backend"], [], s["status"], list(s["flags"] or []), json.loads(s["attributes"] or "{}"))
        if rid in no_tags:  # the image is all there is
            status = s["status"] if s["status"] in ("ok", "ambiguous") else "no_character"
            row.update(status=status, subject_count=s["faces"] or None)
            flags = ["image_only", *image.flags]  # the tag extractor's flags were about an empty tag list
            current = {f.key: _empty_attribute(f) for f in ontology.fields} if status == "ok" else {}
        else:
            current = {f.key: row[f.key] for f in ontology.fields} if row["status"] == "ok" else {}
        if row["status"] == "ok":
            guessed = {k: v for k, v in current.items() if v and v["source"] == "head"}
            merged, extra = reconcile({**current, **{k: _empty_attribute(spec[k]) for k in guessed}}, image)
            merged.update({k: v for k, v in guessed.items() if merged[k]["value"] in (UNKNOWN, [])})
            # the fill policy: an image reading decides only fields that allow it
            merged.update(
                {
                    k: current.get(k) or _empty_attribute(spec[k])
                    for k, v in merged.items()
                    if v and v.get("source") == "image" and "image" not in spec[k].fill
                }
            )
            flags += [f for f in extra if rid not in no_tags]
            for f in ontology.fields:
                v, head = merged[f.key], heads.get(rid, {}).get(f.key)
                unknown = v["value"] in (UNKNOWN, []) and not v["evidence"]
                if unknown and head and head["above_threshold"] and "image_head" in f.fill:
                    merged[f.key] = {
                        "value": head["value"],
                        "confidence": head["confidence"],
                        "evidence": [f"head:{head['model']}"],
                        "source": "image_head",
                    }
            row.update(merged)
        elif rid not in no_tags and any(f.startswith("faces:") for f in image.flags):
            flags.append("image_shows_several")
        rows.append({**row, "flags": flags})
    fixed = pl.DataFrame(rows, schema=touched.schema)
    rest = ordered.join(fixed.select("record_id"), on="record_id", how="anti")
    out = pl.concat([rest, fixed]).sort("_order").drop("_order")
    return out.join(image_facts(images, signals, image_rejects), on="record_id", how="left", maintain_order="left")


def image_facts(images: pl.DataFrame | None, signals: pl.DataFrame | None, image_rejects: pl.DataFrame | None) -> pl.DataFrame:
    """``record_id`` and the ``image`` struct of the output: reference, hash, size, faces (or just the reference of a rejected image)."""
    parts = []
    if images is not None and images.height:
        decoded = images.select(
            "record_id", pl.col("image_ref").alias("ref"), "sha256", "phash", "width", "height", "format", "mode", "frames"
        )
        if signals is not None:
            decoded = decoded.join(signals.select("record_id", "backend", "faces", "face_boxes"), on="record_id", how="left")
        parts.append(decoded)
    if image_rejects is not None and image_rejects.height:
        parts.append(image_rejects.select("record_id", pl.col("image_ref").alias("ref")))
    names = list(IMAGE_DTYPE.to_schema())
    if not parts:
        return pl.DataFrame(schema={"record_id": pl.String, "image": IMAGE_DTYPE})
    facts = pl.concat(parts, how="diagonal_relaxed")
    facts = facts.with_columns([pl.lit(None).alias(n) for n in names if n not in facts.columns])
    facts = facts.with_columns(pl.col("face_boxes").fill_null(pl.lit([], dtype=pl.List(pl.List(pl.Int32)))))
    return facts.select("record_id", pl.struct(names).cast(IMAGE_DTYPE).alias("image"))


def mart_stage(
    labels: pl.DataFrame,
    rejects: pl.DataFrame,
    ontology: Ontology,
    profiles: pl.DataFrame | None = None,
    predictions: pl.DataFrame | None = None,
    images: dict[str, pl.DataFrame | None] | None = None,
) -> pl.DataFrame:
    """The final table: every labelled record (gaps filled from profiles, heads and images) plus every rejected row.

    ``images``, for a partition with images: ``tagless``, ``signals``, ``image_rejects``
    and ``image_predictions`` frames (see ``apply_images``).
    """
    fields = [f.key for f in ontology.fields]
    if profiles is not None or predictions is not None:
        labels = fill_gaps(labels, ontology, profiles, predictions)
    if images:
        labels = apply_images(labels, ontology, **images)
    if "image" not in labels.columns:
        labels = labels.with_columns(pl.lit(None, dtype=IMAGE_DTYPE).alias("image"))
    ok = labels.select(
        *KEY_COLUMNS,
        "status",
        (pl.col("reason") if "reason" in labels.columns else pl.lit(None, dtype=pl.String)).alias("reason"),
        "subject_count",
        "flags",
        "characters",
        "unknown_tags",
        *fields,
        "image",
    )
    bad = rejects.select(
        *KEY_COLUMNS,
        pl.lit("rejected").alias("status"),
        "reason",
        pl.lit(None, dtype=pl.Int32).alias("subject_count"),
        EMPTY_LIST.alias("flags"),
        EMPTY_LIST.alias("characters"),
        EMPTY_LIST.alias("unknown_tags"),
        *(pl.lit(None, dtype=ok.schema[k]).alias(k) for k in fields),
        pl.lit(None, dtype=IMAGE_DTYPE).alias("image"),
    )
    return pl.concat([ok, bad]).sort("partition", "row_index")


def unknown_rates(mart: pl.DataFrame, ontology: Ontology) -> dict[str, float]:
    """Share of ``ok`` records whose field is unknown (single) or empty (multi)."""
    ok = mart.filter(pl.col("status") == "ok")
    if ok.height == 0:
        return {}
    rates = {}
    for f in ontology.fields:
        value = pl.col(f.key).struct.field("value")
        unknown = value.list.len() == 0 if f.cardinality == "multi" else value == "unknown"
        rates[f.name] = round(float(ok.select(unknown.mean()).item()), 4)
    return rates


def value_counts(mart: pl.DataFrame, ontology: Ontology, top: int = 8) -> dict[str, dict[str, int]]:
    """Most frequent values per field among ``ok`` records."""
    ok = mart.filter(pl.col("status") == "ok")
    out = {}
    for f in ontology.fields:
        value = pl.col(f.key).struct.field("value")
        vc = ok.select(value.explode() if f.cardinality == "multi" else value).drop_nulls().to_series().value_counts(sort=True).head(top)
        out[f.name] = dict(zip(vc[:, 0].to_list(), vc[:, 1].to_list(), strict=True))
    return out


def extract_one(tag_string: str, ontology: Ontology | None = None, vocabulary: Vocabulary | None = None) -> dict:
    """One tag string through every stage, as the JSON object the table holds for it."""
    from charassets.domain.schema import to_json_frame
    from charassets.domain.sources import RAW_SCHEMA, Chunk, validate_records

    ontology = ontology or Ontology.load()
    vocabulary = vocabulary or Vocabulary.embedded()
    spec = SourceSpec(name="cli", uri="-", layout="ordered")
    chunk = Chunk(partition="cli", source="cli", file="-", format="jsonl", row_start=0, row_count=1, byte_start=0, byte_end=0)
    raw = pl.DataFrame(
        [{"source_id": "1", "source": "cli", "partition": "cli", "file": "-", "row_index": 0, "tags_raw": tag_string}], schema=RAW_SCHEMA
    )
    records, rejects = validate_records(raw, spec, chunk)
    clean, _ = clean_stage(records, spec, vocabulary)
    mart = mart_stage(label_stage(clean, ontology), rejects, ontology)
    return to_json_frame(mart, ontology).drop("partition", "source").row(0, named=True)
