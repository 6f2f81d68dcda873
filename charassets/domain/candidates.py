"""What each source offers, as one candidate column per field, and ``decide``: the final value of every field by ``resolve``.

The rules of each source live here (when a profile may fill, which head classes are
verified on this partition, how an image reading enters); the order among them lives in
``resolve.PRECEDENCE`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from charassets.domain.images.calibration import IMAGE_MIN_CONFIDENCE  # the one threshold every image path uses
from charassets.domain.resolve import (
    REPORTED_AS,
    attribute_value,
    decided,
    empty_value,
    resolve,
    value_dtype,
)

HEAD_FILE_MIN_SUPPORT = 20  # records with tag evidence a head class needs in this partition to be verified
HEAD_FILE_PRECISION = 0.9
_NO_FLAGS = pl.lit([], dtype=pl.List(pl.String))


def verified_head_classes(labels: pl.DataFrame, predictions: pl.DataFrame, keys: list[str]) -> dict[str, list[str]]:
    """Per field key: the head classes that hold their precision on *this* data, checked against the records whose tags state the field.

    Head predictions are made with each record's own evidence tags masked out, so on
    records with tag evidence they are an honest test of the head on data like the
    records it would fill. A class fills only where, among this partition's tag-labelled
    records, its confident predictions were right at least ``HEAD_FILE_PRECISION`` of
    the time over at least ``HEAD_FILE_MIN_SUPPORT`` of them: a head trained on other
    data (the demo's, say) does not fill a file it does not fit. One join serves every key.
    """
    joined = (
        labels.lazy()  # the filter reads only the columns kept (all of a partition's labels: 0.03 s)
        .filter(pl.col("status") == "ok")
        .select("record_id", *keys)
        .join(predictions.lazy().select("record_id", *(pl.col(k).alias(f"_pred_{k}") for k in keys)), on="record_id")
        .collect()
    )
    out = {}
    for key in keys:
        v, p = pl.col(key).struct, pl.col(f"_pred_{key}").struct
        stats = (
            joined.filter((v.field("source") == "tags") & p.field("above_threshold").fill_null(False))
            .select(v.field("value").alias("truth"), p.field("value").alias("pred"))
            .group_by("pred")
            .agg(pl.len().alias("n"), (pl.col("pred") == pl.col("truth")).mean().alias("precision"))
            .filter((pl.col("n") >= HEAD_FILE_MIN_SUPPORT) & (pl.col("precision") >= HEAD_FILE_PRECISION))
        )
        out[key] = stats.get_column("pred").to_list()
    return out


def _conflict_candidates(df: pl.DataFrame, key: str, name: str, ontology) -> pl.DataFrame:
    """``record_id, _cands``: the values a record's evidence tags name for a field it could not decide (conflict or several)."""
    flagged = df.filter(pl.col("flags").list.contains(f"conflict:{key}") | pl.col("flags").list.contains(f"several:{key}"))
    long = flagged.select("record_id", pl.col(key).struct.field("evidence").alias("tag")).explode("tag").drop_nulls("tag")
    if long.height == 0:
        return pl.DataFrame(schema={"record_id": pl.String, "_cands": pl.List(pl.String)})
    rules = ontology.rules_for(long.get_column("tag")).filter((pl.col("field") == name) & (pl.col("rank") >= 1))
    return long.join(rules.select("tag", "value"), on="tag").group_by("record_id").agg(pl.col("value").unique().alias("_cands"))


def _image_frame(labels: pl.DataFrame, images: Mapping[str, pl.DataFrame | None], ontology) -> pl.DataFrame:
    """Per record: ``_tagless``, the image's status, faces and flags, its readings ``_img`` and the image reject reason."""
    readings = pl.Struct({f.key: value_dtype(f.cardinality == "multi") for f in ontology.fields})
    tagless = images.get("tagless")
    no_tags = tagless.get_column("record_id").implode() if tagless is not None else pl.lit([], dtype=pl.List(pl.String))
    out = labels.select("record_id", pl.col("record_id").is_in(no_tags).alias("_tagless"))
    signals = images.get("signals")
    sig = pl.DataFrame(
        schema={
            "record_id": pl.String,
            "_img_status": pl.String,
            "_img_faces": pl.Int32,
            "_img_flags": pl.List(pl.String),
            "_img": readings,
        }
    )
    if signals is not None and signals.height:
        sig = signals.select(
            "record_id",
            pl.col("status").cast(pl.String).alias("_img_status"),
            pl.col("faces").cast(pl.Int32).alias("_img_faces"),
            pl.col("flags").cast(pl.List(pl.String)).fill_null(_NO_FLAGS).alias("_img_flags"),
            pl.col("attributes").cast(pl.String).fill_null("{}").str.json_decode(readings).alias("_img"),
        )
    rejects = images.get("image_rejects")
    rej = pl.DataFrame(schema={"record_id": pl.String, "_img_reject": pl.String})
    if rejects is not None and rejects.height:
        rej = rejects.select("record_id", pl.col("reason").alias("_img_reject"))
    return out.join(sig, on="record_id", how="left", maintain_order="left").join(rej, on="record_id", how="left", maintain_order="left")


def _append(flags: pl.Expr, when: pl.Expr, flag: pl.Expr) -> pl.Expr:
    return pl.when(when).then(pl.concat_list(flags, flag)).otherwise(flags)


def decide(
    labels: pl.DataFrame,
    ontology,
    profiles: pl.DataFrame | None = None,
    predictions: pl.DataFrame | None = None,
    images: Mapping[str, pl.DataFrame | None] | None = None,
) -> pl.DataFrame:
    """Every field of every record decided by ``resolve`` over the candidates of each source; status and flags updated.

    ``labels``: the tag attributes of one partition. ``profiles``: the character profile rows
    confident enough to be used (``tags.profiles.usable``).
    ``predictions``: text-head predictions. ``images``: ``tagless`` (records without a
    single tag), ``signals``, ``image_rejects`` and ``image_predictions`` frames.

    Besides the values: a record without tags whose picture was read takes the image's
    status and subject count (flag ``image_only``); one whose picture could not be read is
    ``rejected`` with the reason; a tagged record whose picture failed is flagged
    ``image_rejected``. Flags also say what the resolution saw: ``conflict_resolved:<key>``
    (identity chose among the tags' values), ``contradicts_profile:<key>=<value>``,
    ``image_disagrees:<key>=<value>`` (a reading that differs from what tags or profile
    decided; a ``multicolored`` head agrees with any colour) and ``image_shows_several``.
    """
    df = labels if "reason" in labels.columns else labels.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    df = df.with_columns(pl.when(pl.col("characters").list.len() == 1).then(pl.col("characters").list.first()).alias("_character"))
    images = images or {}
    with_images = bool(images) and any(images.get(k) is not None and images[k].height for k in ("signals", "image_rejects"))
    if with_images:
        df = df.join(_image_frame(labels, images, ontology), on="record_id", how="left", maintain_order="left")
    else:
        df = df.with_columns(
            pl.lit(False).alias("_tagless"),
            pl.lit(None, dtype=pl.String).alias("_img_status"),
            pl.lit(None, dtype=pl.Int32).alias("_img_faces"),
            pl.lit(None, dtype=pl.List(pl.String)).alias("_img_flags"),
            pl.lit(None, dtype=pl.String).alias("_img_reject"),
        )
    tagless, seen, unreadable = pl.col("_tagless"), pl.col("_img_status").is_not_null(), pl.col("_img_reject").is_not_null()
    image_only = tagless & seen
    image_status = pl.when(pl.col("_img_status").is_in(["ok", "ambiguous"])).then(pl.col("_img_status")).otherwise(pl.lit("no_character"))
    df = df.with_columns(
        (pl.col("status") == "ok").alias("_label_ok"),
        pl.when(tagless & unreadable)
        .then(pl.lit("rejected"))
        .when(image_only)
        .then(image_status)
        .otherwise(pl.col("status"))
        .alias("_status"),
    )
    label_ok, final_ok = pl.col("_label_ok"), pl.col("_status") == "ok"
    prof = profiles if profiles is not None and profiles.height else None
    predictions = predictions if predictions is not None and predictions.height else None
    image_heads = images.get("image_predictions")
    image_heads = image_heads if image_heads is not None and image_heads.height else None
    disagreements: list[pl.Expr] = []
    head_keys = [f.key for f in ontology.fields if predictions is not None and "head" in f.fill and f.key in predictions.columns]
    if head_keys:  # one join brings every head's prediction: ``_h_<key>``
        allowed_classes = verified_head_classes(labels, predictions, head_keys)
        heads = predictions.select("record_id", *(pl.col(k).alias(f"_h_{k}") for k in head_keys))
        df = df.join(heads, on="record_id", how="left", maintain_order="left")
    for f in ontology.fields:
        multi, key = f.cardinality == "multi", f.key
        cur = pl.col(key)
        value, evidence = cur.struct.field("value"), cur.struct.field("evidence")
        no_evidence = label_ok & ~decided(value, multi) & (evidence.list.len() == 0)
        tag_value = label_ok & decided(value, multi)  # the tags named a value (the first, where they named several)
        # the tags decided alone: where they named several values, identity may still choose among them
        df = df.with_columns(pl.col("flags").list.contains(f"several:{key}").alias("_several"))  # before identity rewrites the flags
        cands: dict[str, pl.Expr] = {"tags": pl.when(tag_value & ~pl.col("_several")).then(cur)}
        temp = ["_several"]
        if prof is not None and "profile" in f.fill:
            if multi:
                p = (
                    prof.filter(pl.col("field") == key)
                    .group_by("character")
                    .agg(pl.col("value").sort().alias("_pv"), pl.col("confidence").min().alias("_pc"))
                )
            else:
                p = prof.filter(pl.col("field") == key).select("character", pl.col("value").alias("_pv"), pl.col("confidence").alias("_pc"))
            df = df.join(p.rename({"character": "_character"}), on="_character", how="left", maintain_order="left")
            temp += ["_pv", "_pc"]
            by_profile = pl.concat_list(pl.lit("profile:") + pl.col("_character"))
            cands["profile"] = pl.when(no_evidence & pl.col("_pv").is_not_null()).then(
                attribute_value(pl.col("_pv"), pl.col("_pc"), by_profile, "profile")
            )
            if not multi:
                df = df.join(_conflict_candidates(df, key, f.name, ontology), on="record_id", how="left", maintain_order="left")
                temp.append("_cands")
                resolved = label_ok & pl.col("_pv").is_not_null() & pl.col("_cands").list.contains(pl.col("_pv")).fill_null(False)
                cands["identity"] = pl.when(resolved).then(
                    attribute_value(
                        pl.col("_pv"),
                        pl.col("_pc"),
                        pl.concat_list(evidence, pl.lit("profile:") + pl.col("_character")),
                        REPORTED_AS["identity"],
                    )
                )
                contradiction = (
                    label_ok
                    & decided(value, multi)
                    & pl.col("_pv").is_not_null()
                    & (value != pl.col("_pv"))
                    & ~pl.col("_several")  # several values named: not a contradiction of one
                )
                settled = pl.col("flags").list.eval(pl.element().filter(~pl.element().is_in([f"conflict:{key}", f"several:{key}"])))
                df = df.with_columns(
                    pl.when(resolved)
                    .then(pl.concat_list(settled, pl.lit([f"conflict_resolved:{key}"])))
                    .otherwise(pl.col("flags"))
                    .alias("flags")
                ).with_columns(
                    _append(pl.col("flags"), contradiction, pl.concat_list(pl.lit(f"contradicts_profile:{key}=") + pl.col("_pv"))).alias(
                        "flags"
                    )
                )
        if with_images:
            seen_value = pl.col("_img").struct.field(key)
            sv = seen_value.struct.field("value")
            if "image" in f.fill:
                confident = seen_value.struct.field("confidence") >= IMAGE_MIN_CONFIDENCE
                open_field = image_only | (label_ok & ~decided(value, multi))  # nothing from the tags, or they argue
                cands["image"] = pl.when(
                    final_ok & seen & open_field & decided(sv, multi).fill_null(False) & confident.fill_null(False)
                ).then(seen_value)
            # what tags, identity or profile said: a reading that differs is flagged
            told = pl.coalesce([cands.get("identity", pl.lit(None)), pl.when(tag_value).then(cur), cands.get("profile", pl.lit(None))])
            told = told.struct.field("value")
            as_text = (lambda e: e.list.sort().list.join(",")) if multi else (lambda e: e)
            df = df.with_columns(
                pl.when(
                    label_ok
                    & ~tagless
                    & seen
                    & decided(sv, multi).fill_null(False)
                    & (as_text(told) != as_text(sv))
                    & (as_text(told) != "multicolored")
                )
                .then(pl.concat_list(pl.lit(f"image_disagrees:{key}=") + as_text(sv)))
                .otherwise(_NO_FLAGS)
                .alias(f"_disagrees_{key}")
            )
            disagreements.append(pl.col(f"_disagrees_{key}"))
        if key in head_keys:
            temp.append(f"_h_{key}")
            hv = pl.col(f"_h_{key}").struct
            fires = hv.field("above_threshold").fill_null(False) & hv.field("value").is_in(allowed_classes[key])
            cands["head"] = pl.when(no_evidence & fires).then(
                attribute_value(hv.field("value"), hv.field("confidence"), pl.concat_list(pl.lit("head:") + hv.field("model")), "head")
            )
        if image_heads is not None and "image_head" in f.fill and key in image_heads.columns:
            df = df.join(image_heads.select("record_id", pl.col(key).alias("_ih")), on="record_id", how="left", maintain_order="left")
            temp.append("_ih")
            ih = pl.col("_ih").struct
            open_field = pl.when(image_only).then(pl.lit(True)).otherwise(no_evidence)
            cands["image_head"] = pl.when(final_ok & seen & open_field & ih.field("above_threshold").fill_null(False)).then(
                attribute_value(
                    ih.field("value"), ih.field("confidence"), pl.concat_list(pl.lit("head:") + ih.field("model")), "image_head"
                )
            )
        fallback = pl.when(image_only).then(empty_value(multi)).otherwise(cur)
        df = df.with_columns(pl.when(final_ok).then(resolve(cands, fallback)).alias(key)).drop(temp)
    several = pl.col("_img_flags").list.eval(pl.element().str.starts_with("faces:")).list.any().fill_null(False)
    tagged_flags = pl.concat_list(
        pl.col("flags"),
        pl.when(~tagless & unreadable).then(pl.lit(["image_rejected"])).otherwise(_NO_FLAGS),
        *disagreements,
        pl.when(~tagless & seen & several).then(pl.lit(["image_shows_several"])).otherwise(_NO_FLAGS),
    )
    df = df.with_columns(
        pl.when(tagless & unreadable)
        .then(_NO_FLAGS)
        .when(image_only)
        .then(pl.concat_list(pl.lit(["image_only"]), pl.col("_img_flags")))
        .otherwise(tagged_flags)
        .alias("flags"),
        pl.when(tagless & unreadable).then(pl.lit("image: ") + pl.col("_img_reject")).otherwise(pl.col("reason")).alias("reason"),
        pl.when(tagless & unreadable)
        .then(pl.lit(None, dtype=pl.Int32))
        .when(image_only)
        .then(pl.when(pl.col("_img_faces") > 0).then(pl.col("_img_faces")))
        .otherwise(pl.col("subject_count"))
        .cast(pl.Int32)
        .alias("subject_count"),
        pl.col("_status").alias("status"),
    )
    return df.drop(
        "_character", "_tagless", "_img_status", "_img_faces", "_img_flags", "_img_reject", "_label_ok", "_status", "_img", strict=False
    )
