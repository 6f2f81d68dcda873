"""Training data and evaluation for attribute heads, across partitions with bounded memory.

Sampling is a per-class bottom-k by hash of the record id: each partition contributes its
k smallest hashes per class, merged and trimmed to k again, so the sample is uniform
within each class, deterministic, and never larger than k x classes whatever the data size.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from charassets.domain.models.fitting import fit
from charassets.domain.models.heads import (
    NEVER,
    HeadConfig,
    TrainedHead,
    choose_class_thresholds,
    masked_features,
    stable_split,
    train_head,
)
from charassets.domain.models.metrics import evaluate, evaluate_multilabel
from charassets.domain.ontology import FieldSpec

MIN_PER_CLASS = 10


SAMPLE_HASH = "sample_hash"  # the labels table's copy of each record's hash, written when the record is labelled


def _hash(s: str) -> str:
    return hashlib.blake2b(s.encode(), digest_size=8).hexdigest()


def sample_hashes(record_ids: pl.Series) -> pl.Series:
    """Each record's place in every per-class sample: the hex blake2b (8 bytes) of its id, stable across versions."""
    return pl.Series(SAMPLE_HASH, [_hash(s) for s in record_ids.to_list()], dtype=pl.String)


def with_sample_hash(labels: pl.DataFrame) -> pl.DataFrame:
    """The record-id hash ``h`` that orders every per-class sample: the labels' stored one, or computed here."""
    if "h" in labels.columns:
        return labels
    if SAMPLE_HASH in labels.columns:
        return labels.rename({SAMPLE_HASH: "h"})
    return labels.with_columns(sample_hashes(labels.get_column("record_id")).alias("h"))


def field_candidates(labels: pl.DataFrame, spec: FieldSpec, per_class: int, bounds: pl.DataFrame | None = None) -> pl.DataFrame:
    """This partition's bottom-k records per class: record_id, partition, label, evidence, characters, hash.

    ``bounds`` (``label``, ``h``; ``class_bounds`` of the sample so far): a record hashing above its class's bound
    cannot enter that sample, so it is not taken (the merged sample is the same, from far fewer rows).
    """
    value = pl.col(spec.key).struct.field("value")
    rows = with_sample_hash(labels).filter((pl.col("status") == "ok") & value.is_not_null() & (value != "unknown"))
    if bounds is not None and bounds.height:
        bound = value.replace_strict(bounds.get_column("label"), bounds.get_column("h"), default=None, return_dtype=pl.String)
        rows = rows.filter(bound.is_null() | (pl.col("h") <= bound))
    return (
        rows.select(
            "record_id", "partition", value.alias("label"), pl.col(spec.key).struct.field("evidence").alias("evidence"), "characters", "h"
        )
        .sort("h")
        .group_by("label", maintain_order=True)
        .head(per_class)
    )


def merge_candidates(a: pl.DataFrame | None, b: pl.DataFrame, per_class: int) -> pl.DataFrame:
    both = b if a is None else pl.concat([a, b])
    return both.sort("h").group_by("label", maintain_order=True).head(per_class)


def class_bounds(sample: pl.DataFrame | None, per_class: int) -> pl.DataFrame | None:
    """``label`` and the largest kept ``h`` of each class whose sample is full: later records need a smaller hash to enter."""
    if sample is None:
        return None
    return sample.group_by("label").agg(pl.col("h").max(), pl.len()).filter(pl.col("len") >= per_class).select("label", "h")


@dataclass
class FieldResult:
    head: TrainedHead
    metrics: dict
    baselines: dict[str, float]
    n_train: int
    n_val: int
    val_x: np.ndarray
    val_y: np.ndarray
    label_counts: dict[str, int]


def character_rule(train_chars: list[list[str]], train_y: list[str], val_chars: list[list[str]], fallback: str) -> list[str]:
    """Rules-only baseline: a named character's majority value in training, else the majority class."""
    votes: dict[str, Counter] = {}
    for chars, y in zip(train_chars, train_y, strict=True):
        for c in chars or []:
            votes.setdefault(c, Counter())[y] += 1
    out = []
    for chars in val_chars:
        known = [votes[c].most_common(1)[0][0] for c in (chars or []) if c in votes]
        out.append(known[0] if known else fallback)
    return out


def abstention(head: TrainedHead, metrics: dict, baselines: dict[str, float], proba: np.ndarray, y_val: np.ndarray) -> dict:
    """Decide what the head may fill, and the figures that say so.

    A head whose macro-F1 does not beat both baselines (majority class, the named
    character's majority) never fills: every class threshold becomes ``NEVER``. Otherwise
    each class fires only above its own threshold (see ``choose_class_thresholds``).
    Returns ``fills`` (0/1), ``classes_firing``, ``threshold`` (the lowest finite one, NaN
    when none), ``coverage_at_threshold`` and ``precision_at_threshold`` on validation data,
    and, for multi-label heads, ``values_per_record`` (mean asserted values where any fires)
    against ``true_values_per_record``.
    """
    beats = metrics["macro_f1"] > max(baselines.values())
    if not beats:
        head.class_thresholds = [NEVER] * len(head.classes)
    head.meta["fills"] = bool(beats and head.firing_classes)
    finite = [t for t in head.class_thresholds if t < NEVER]
    if head.multilabel:
        chosen = head.predict_sets(proba)
        right = (chosen & (y_val > 0)).sum()
        asserted = chosen.sum(1)
        extra = {
            "values_per_record": float(asserted[asserted > 0].mean()) if (asserted > 0).any() else 0.0,
            "true_values_per_record": float(y_val.sum(1).mean()) if len(y_val) else 0.0,
        }
        fired, precision = chosen.any(1), (float(right / chosen.sum()) if chosen.sum() else float("nan"))
    else:
        fired = head.fires(proba)
        precision = float((proba.argmax(1)[fired] == y_val[fired]).mean()) if fired.any() else float("nan")
        extra = {}
    head.threshold = min(finite) if finite else float("nan")
    return {
        "fills": int(head.meta["fills"]),
        "classes_firing": len(finite),
        "threshold": head.threshold,
        "coverage_at_threshold": float(fired.mean()) if len(fired) else 0.0,
        "precision_at_threshold": precision,
        **extra,
    }


def split_keys(cand: pl.DataFrame) -> list[str]:
    """What decides a record's side of the split: its ``group`` where the sample has one (near duplicates share it), else its id.

    Near-duplicate images on both sides would measure memory, not generalisation.
    """
    return cand.get_column("group" if "group" in cand.columns else "record_id").to_list()


def train_field(
    spec: FieldSpec, cand: pl.DataFrame, vectors: np.ndarray, sums: np.ndarray, cache, weights: np.ndarray, config: HeadConfig
) -> FieldResult | None:
    """Masked features, stable stratified split, head, threshold, metrics and baselines; None if too few labels.

    Without a tag cache (image vectors, which hold no tags to leak) the vectors are used as they are.
    """
    counts = dict(Counter(cand.get_column("label").to_list()))
    keep = [c for c, n in counts.items() if n >= MIN_PER_CLASS]
    if len(keep) < 2:
        return None
    sel = cand.get_column("label").is_in(keep).to_numpy()
    cand, vectors, sums = cand.filter(sel), vectors[sel], (None if sums is None else sums[sel])
    x = vectors if cache is None else masked_features(vectors, sums, cand.get_column("evidence"), cache, weights)
    y = cand.get_column("label").to_list()
    val = stable_split(split_keys(cand), y)
    head = fit(train_head, spec.name, x[~val], [v for v, m in zip(y, val, strict=True) if not m], config)
    index = {c: i for i, c in enumerate(head.classes)}
    y_val = np.array([index[v] for v, m in zip(y, val, strict=True) if m])
    proba = head.predict_proba(x[val])
    head.class_thresholds, head.class_precision = choose_class_thresholds(proba, y_val)
    metrics = evaluate(head.classes, y_val, proba.argmax(1))
    train_y = [v for v, m in zip(y, val, strict=True) if not m]
    majority = Counter(train_y).most_common(1)[0][0]
    chars = cand.get_column("characters").to_list()
    rule = character_rule(
        [c for c, m in zip(chars, val, strict=True) if not m], train_y, [c for c, m in zip(chars, val, strict=True) if m], majority
    )
    baselines = {
        "majority": evaluate(head.classes, y_val, np.full(len(y_val), index[majority]))["macro_f1"],
        "character_rule": evaluate(head.classes, y_val, np.array([index[v] for v in rule]))["macro_f1"],
    }
    metrics.update(abstention(head, metrics, baselines, proba, y_val))
    return FieldResult(head, metrics, baselines, int((~val).sum()), int(val.sum()), x[val], y_val, counts)


def import_plotting():
    """matplotlib's pyplot on the Agg backend (no display), imported now if it was not yet (~0.3-0.4 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots(result: FieldResult, out_dir: Path) -> dict[str, str]:
    """Per-class recall against support (log scale), and the normalised confusion matrix."""
    plt = import_plotting()

    out_dir.mkdir(parents=True, exist_ok=True)
    classes = result.head.classes
    per = result.metrics["per_class"]
    fig, ax = plt.subplots(figsize=(6, 4))
    sup = [per[c]["support"] for c in classes]
    rec = [per[c]["recall"] for c in classes]
    ax.scatter(sup, rec)
    for c, s, r in zip(classes, sup, rec, strict=True):
        ax.annotate(c, (s, r), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="validation support (log)", ylabel="recall", title=f"{result.head.field}: recall by class size", ylim=(-0.05, 1.05))
    fig.tight_layout()
    recall_path = out_dir / "recall_vs_support.png"
    fig.savefig(recall_path, dpi=100)
    plt.close(fig)
    cm = result.metrics["confusion_normalized"]
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    if isinstance(cm, dict):  # multi-label: each class's false-negative and false-positive rates
        rates = np.array([[cm[c][1][0], cm[c][0][1]] for c in classes])
        ax.imshow(rates, cmap="Reds", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks([0, 1], ["missed (FN rate)", "false alarm (FP rate)"], fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set(title="per-class error rates")
    else:
        ax.imshow(np.array(cm), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set(xlabel="predicted", ylabel="rule label", title="confusion (row-normalised)")
    fig.tight_layout()
    cm_path = out_dir / "confusion_normalized.png"
    fig.savefig(cm_path, dpi=100)
    plt.close(fig)
    return {"recall_vs_support": str(recall_path), "confusion_normalized": str(cm_path)}


def multi_candidates(labels: pl.DataFrame, spec: FieldSpec, per_class: int) -> pl.DataFrame:
    """Records stating at least one value of a multi-valued field, bottom-k per value (a record is kept once)."""
    value = pl.col(spec.key).struct.field("value")
    rows = (
        with_sample_hash(labels)
        .filter((pl.col("status") == "ok") & value.is_not_null() & (value.list.len() > 0))
        .select(
            "record_id",
            "partition",
            value.alias("labels"),
            pl.col(spec.key).struct.field("evidence").alias("evidence"),
            "characters",
            "h",
        )
    )
    keep = (
        rows.select("record_id", "h", pl.col("labels").alias("label"))
        .explode("label")
        .sort("h")
        .group_by("label", maintain_order=True)
        .head(per_class)
    )
    return rows.join(keep.select("record_id").unique(), on="record_id", how="semi").with_columns(pl.col("labels").alias("label"))


def merge_multi(a: pl.DataFrame | None, b: pl.DataFrame, per_class: int) -> pl.DataFrame:
    both = b if a is None else pl.concat([a, b])
    keep = (
        both.select("record_id", "h", pl.col("labels").alias("l")).explode("l").sort("h").group_by("l", maintain_order=True).head(per_class)
    )
    return both.join(keep.select("record_id").unique(), on="record_id", how="semi")


def train_multi_field(
    spec: FieldSpec, cand: pl.DataFrame, vectors: np.ndarray, sums: np.ndarray, cache, weights: np.ndarray, config: HeadConfig
) -> FieldResult | None:
    """Multi-label head for a multi-valued field: per-class thresholds, per-class metrics, baselines."""
    from charassets.domain.models.heads import choose_class_thresholds, multi_hot, train_multilabel_head

    sets = cand.get_column("labels").to_list()
    counts = Counter(c for s in sets for c in s)
    keep = sorted(c for c, n in counts.items() if n >= MIN_PER_CLASS)
    if len(keep) < 2:
        return None
    sets = [[c for c in s if c in keep] for s in sets]
    x = vectors if cache is None else masked_features(vectors, sums, cand.get_column("evidence"), cache, weights)
    first = [s[0] if s else "" for s in sets]
    val = stable_split(split_keys(cand), first)
    train_sets = [s for s, m in zip(sets, val, strict=True) if not m]
    head = fit(train_multilabel_head, spec.name, x[~val], train_sets, config)
    y_val = multi_hot([s for s, m in zip(sets, val, strict=True) if m], head.classes)
    proba = head.predict_proba(x[val])
    head.class_thresholds, head.class_precision = choose_class_thresholds(proba, y_val)
    metrics = evaluate_multilabel(head.classes, y_val, (proba >= 0.5).astype(int))
    majority = Counter(c for s in train_sets for c in s).most_common(1)[0][0]
    majority_pred = multi_hot([[majority]] * len(y_val), head.classes)
    chars = cand.get_column("characters").to_list()
    votes: dict[str, Counter] = {}
    seen: Counter = Counter()
    for c, s, m in zip(chars, sets, val, strict=True):
        if not m and c:
            seen[c[0]] += 1
            votes.setdefault(c[0], Counter()).update(s)
    rule = [
        [v for v, n in votes[c[0]].items() if n / seen[c[0]] >= 0.5] if c and c[0] in votes else [majority]
        for c, m in zip(chars, val, strict=True)
        if m
    ]
    baselines = {
        "majority": evaluate_multilabel(head.classes, y_val, majority_pred.astype(int))["macro_f1"],
        "character_rule": evaluate_multilabel(head.classes, y_val, multi_hot(rule, head.classes).astype(int))["macro_f1"],
    }
    metrics.update(abstention(head, metrics, baselines, proba, y_val))
    return FieldResult(head, metrics, baselines, int((~val).sum()), int(val.sum()), x[val], y_val, dict(counts))
