"""Applying champion heads: which champions fit an embedder, which records they run on, and their output columns."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from charassets.domain.models.heads import label_sets
from charassets.domain.models.registry import ModelStore, model_name

CALIBRATION_ROWS = 2_000  # tag-labelled records per partition predicted too: what checks a head on this data

_log = logging.getLogger(__name__)


def champion_heads(store: ModelStore, ontology, dim: int | None, prefix: str = "", log=_log) -> dict:
    """``field key -> (head, "<model>@v<version>")`` of every champion whose input size fits ``dim`` (unknown: all).

    Only closed attributes whose fill policy allows a head (``image_head`` for the ``image_`` family)."""
    heads = {}
    source = "image_head" if prefix else "head"
    for f in [f for f in ontology.fields if f.values and source in f.fill]:
        champ = store.champion(prefix + f.key)
        if not champ:
            continue
        head = store.load_head(champ[1])
        if dim is None or head.dim == dim:
            heads[f.key] = (head, f"{model_name(prefix + f.key)}@v{champ[0]}")
        else:
            log.warning(f"{f.name}: champion v{champ[0]} expects {head.dim}-d vectors, the embedder gives {dim}: skipped")
    return heads


def prediction_struct(head, proba: np.ndarray, model: str, key: str, probs: bool = True) -> pl.Series:
    """One head's output as a struct column: value, confidence, above_threshold, model (and all class probabilities).

    ``above_threshold``: the value clears its class's own threshold (a class without one
    never does). ``confidence`` is then the class's calibrated precision on validation
    data (what a filled value carries), else the raw probability. Multi-label heads give
    the classes clearing their own thresholds, with the weakest precision as confidence.
    """
    if head.multilabel:
        chosen = head.predict_sets(proba)
        value = label_sets(chosen, head.classes)
        precision = np.where(chosen, head.calibrated(np.arange(len(head.classes)))[None, :], 1.0).min(1)
        conf, above = np.where(chosen.any(1), precision, proba.max(1)), chosen.any(1)
    else:
        top = proba.argmax(1)
        value, above = np.asarray(head.classes)[top], head.fires(proba)
        conf = np.where(above, head.calibrated(top), proba.max(1))
    columns = {
        "value": value,
        "confidence": conf.astype(np.float32),
        "above_threshold": above,
        "model": pl.repeat(model, len(proba), dtype=pl.String, eager=True),
    }
    if probs:
        columns["probs"] = pl.Series(proba.astype(np.float32)).cast(pl.List(pl.Float32))
    return pl.DataFrame(columns).to_struct(key)


def needs_prediction(labels: pl.DataFrame, keys: list[str]) -> pl.Expr:
    """The records a head is run on: ``ok`` records with a gap in some head's field (what it may fill), and
    up to ``CALIBRATION_ROWS`` others (by record-id hash) on which the fill step checks the head against the tags."""
    ok = pl.col("status") == "ok"
    gap = pl.any_horizontal(
        (pl.col(k).struct.field("value") == "unknown") & (pl.col(k).struct.field("evidence").list.len() == 0) for k in keys
    )
    rank = pl.col("record_id").hash(seed=7).rank("ordinal").over(ok & ~gap)
    return ok & (gap | (rank <= CALIBRATION_ROWS))
