"""Train, log and gate: one head per field on its sample, each a new MLflow version that takes the ``champion``
alias only if it beats the current champion on the same validation records.

A head whose sample, labels, vectors and config are those of the current champion is not
trained into a new version at all (``unchanged``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from charassets.domain.models.features import vector_matrix
from charassets.domain.models.fitting import each_head
from charassets.domain.models.heads import HeadConfig
from charassets.domain.models.metrics import evaluate, evaluate_multilabel, import_sklearn
from charassets.domain.models.registry import LoggedHead, ModelStore
from charassets.domain.models.sampling import training_digest
from charassets.domain.models.training import FieldResult, plots, train_field, train_multi_field

_log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """Per trained head a summary row, per field a gate row, and the fields skipped with the reason."""

    summary: list[dict] = field(default_factory=list)
    gate_rows: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def lost(self) -> list[dict]:
        """Challengers that lost: recorded, the champion stays in service (an unchanged head is no challenger)."""
        return [g for g in self.gate_rows if not g["promoted"] and not g.get("unchanged")]

    @property
    def unchanged(self) -> list[str]:
        return [g["field"] for g in self.gate_rows if g.get("unchanged")]

    @property
    def not_better_than_majority(self) -> list[str]:
        return [s["field"] for s in self.summary if not s["beats_majority"]]

    @property
    def not_filling(self) -> list[str]:
        return [s["field"] for s in self.summary if not s["fills"]]


def flat_metrics(result: FieldResult) -> dict[str, float]:
    """A training result's metrics as MLflow metrics: overall figures, baselines, per-class F1 and recall."""
    m = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float) and v == v}  # NaN: nothing to log
    m.update({f"baseline_{k}_macro_f1": v for k, v in result.baselines.items()})
    for cls, st in result.metrics["per_class"].items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in cls)
        m[f"f1_{safe}"] = float(st["f1-score"])
        m[f"recall_{safe}"] = float(st["recall"])
    return m


def train_log_and_gate(
    store: ModelStore,
    fields: list,
    cands: dict[str, pl.DataFrame | None],
    emb: pl.DataFrame,
    cache,
    weights,
    head_config: HeadConfig,
    per_class: int,
    data_tags: dict[str, str],
    key_prefix: str = "",
    log=_log,
) -> TrainingOutcome:
    """Train one head per field on its sampled records' vectors, log each to ``store`` as a new version, gate the champion.

    ``key_prefix`` names a family of heads on other vectors (``image_``: heads on image embeddings);
    ``cache``/``weights`` (tag vectors): mask a field's own evidence out of the text vectors (None for images).
    """
    out = TrainingOutcome()

    def train_one(f) -> tuple[FieldResult | None, str]:
        """A field's head on its sampled records, and the digest of what it was trained on."""
        cand = cands[f.key]
        # in the vectors' order (partition, then row): the order the epochs draw batches from. A join that does not say
        # follows whichever side polars hashes, which depends on the sizes
        joined = cand.join(emb, on="record_id", how="inner", maintain_order="right") if cand is not None else None
        if joined is None or not joined.height:
            return None, ""
        vectors = vector_matrix(joined.get_column("vector"))
        trainer = train_multi_field if f.cardinality == "multi" else train_field
        sums = joined.get_column("weight_sum").to_numpy() if cache is not None else None
        result = trainer(f, joined, vectors, sums, cache, weights, head_config)
        return result, training_digest(key_prefix + f.key, joined, head_config, per_class, data_tags.get("embedder", ""))

    # the heads train concurrently when a build lends its worker processes (``fitting``), and are logged and gated as
    # their fits finish; the rows this returns are in the fields' order
    import_sklearn()
    rows = {f.key: 0 if cands[f.key] is None else cands[f.key].height for f in fields}  # what a fit costs: its sampled records
    # closed early on an error: no fit outlives the build's pool
    with closing(each_head(train_one, fields, cost=lambda f: rows[f.key])) as trained:
        for f, (result, digest) in trained:  # as the fits finish
            key = key_prefix + f.key
            if result is None:
                out.skipped[f.name] = "fewer than two classes with enough labels"
                continue
            if store.champion_tags(key).get("training_digest") == digest:
                version = store.champion(key)[0]
                out.gate_rows.append(
                    {
                        "field": f.name,
                        "version": version,
                        "promoted": False,
                        "unchanged": True,
                        "challenger_macro_f1": round(result.metrics["macro_f1"], 4),
                        "champion_macro_f1": None,
                        "champion_version": version,
                        "decision": f"unchanged: same data and config as champion v{version}, no new version",
                    }
                )
                log.info(f"{f.name}: same data and config as champion v{version}: unchanged, no new version")
                continue
            beats_majority = result.metrics["macro_f1"] > result.baselines["majority"]
            logged = _log_result(store, key, f.name, result, head_config, per_class, data_tags, beats_majority, digest, bool(key_prefix))
            gate = champion_gate(store, key, logged, result)
            out.gate_rows.append({"field": f.name, "unchanged": False, **gate})
            out.summary.append(
                {
                    "field": f.name,
                    "version": logged.version,
                    "macro_f1": round(result.metrics["macro_f1"], 4),
                    "majority": round(result.baselines["majority"], 4),
                    "character_rule": round(result.baselines["character_rule"], 4),
                    "beats_majority": beats_majority,
                    "fills": bool(result.head.meta.get("fills")),
                    "classes_firing": len(result.head.firing_classes),
                    "coverage_at_threshold": round(result.metrics["coverage_at_threshold"], 3),
                    "n_train": result.n_train,
                    "n_val": result.n_val,
                    "champion": gate["champion_version"],
                }
            )
            log.info(
                f"{f.name}: macro-F1 {result.metrics['macro_f1']:.3f} (majority {result.baselines['majority']:.3f}), {gate['decision']}"
            )
    order = {f.name: i for i, f in enumerate(fields)}  # the fields' order, whichever head finished first
    out.gate_rows.sort(key=lambda g: order[g["field"]])
    out.summary.sort(key=lambda s: order[s["field"]])
    out.skipped = dict(sorted(out.skipped.items(), key=lambda kv: order[kv[0]]))
    return out


def _log_result(
    store: ModelStore,
    key: str,
    name: str,
    result: FieldResult,
    head_config: HeadConfig,
    per_class: int,
    data_tags: dict[str, str],
    beats_majority: bool,
    digest: str,
    on_images: bool,
) -> LoggedHead:
    """One trained head as a new MLflow version: params, metrics, tags, its report and plots."""
    with tempfile.TemporaryDirectory() as tmp:
        files = plots(result, Path(tmp))
        report = Path(tmp) / "report.json"
        report.write_text(
            json.dumps({"metrics": result.metrics, "baselines": result.baselines, "label_counts": result.label_counts}, indent=2)
        )
        files["report"] = str(report)
        return store.log_head(
            result.head,
            key,
            params={
                "field": name,
                "inputs": "image embeddings" if on_images else "tag embeddings",
                "n_train": result.n_train,
                "n_val": result.n_val,
                "classes": ",".join(result.head.classes),
                "per_class_cap": per_class,
                **{f"head_{k}": v for k, v in head_config.__dict__.items()},
            },
            metrics=flat_metrics(result),
            tags={
                **data_tags,
                "beats_majority": str(beats_majority).lower(),
                "fills": str(bool(result.head.meta.get("fills"))).lower(),
                "training_digest": digest,
            },
            files=files,
        )


def champion_gate(store: ModelStore, field_key: str, logged: LoggedHead, result: FieldResult) -> dict:
    """Promote the new version if there is no comparable champion or it beats the champion on the same validation rows."""
    current = store.champion(field_key)
    new_f1 = result.metrics["macro_f1"]
    if current is None:
        decision, promoted, old_f1 = "first version: champion", True, None
    else:
        old = store.load_head(current[1])
        if old.classes != result.head.classes or old.dim != result.head.dim or old.multilabel != result.head.multilabel:
            decision, promoted, old_f1 = "champion not comparable (classes or embedder changed): challenger promoted", True, None
        else:
            proba = old.predict_proba(result.val_x)
            if old.multilabel:
                old_f1 = evaluate_multilabel(old.classes, result.val_y, old.predict_sets(proba).astype(int))["macro_f1"]
            else:
                old_f1 = evaluate(old.classes, result.val_y, proba.argmax(1))["macro_f1"]
            promoted = new_f1 > old_f1
            decision = f"challenger {new_f1:.4f} vs champion v{current[0]} {old_f1:.4f}: " + ("promoted" if promoted else "champion kept")
    if promoted:
        store.promote(field_key, logged.version)
    store.record_comparison(
        field_key, logged.version, {"gate_decision": decision, "champion_macro_f1_same_val": old_f1, "macro_f1": new_f1}
    )
    champ = store.champion(field_key)
    return {
        "version": logged.version,
        "promoted": promoted,
        "challenger_macro_f1": round(new_f1, 4),
        "champion_macro_f1": None if old_f1 is None else round(old_f1, 4),
        "champion_version": champ[0] if champ else None,
        "decision": decision,
    }
