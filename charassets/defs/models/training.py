"""Wiring shared by the head-training assets (no assets here): run config, the champion gate's check, the run's metadata."""

import dagster as dg
import polars as pl

from charassets.defs.metadata import preview
from charassets.domain.models.champion import TrainingOutcome

GATE = "challenger_beats_champion"


class HeadTraining(dg.Config):
    """Hyperparameters for a training run of the heads (editable in the UI's launchpad)."""

    per_class: int = 2000
    hidden: int = 128
    epochs: int = 40
    lr: float = 3e-3
    fields: list[str] = []  # display names or keys; empty: every closed field whose fill policy lets a head fill it


def gate_spec(asset: str, heads: str) -> dg.AssetCheckSpec:
    """The blocking champion-gate check of ``asset`` (``stage/name``)."""
    return dg.AssetCheckSpec(
        GATE,
        asset=asset.split("/"),
        blocking=True,
        description=f"each new {heads} version takes the `champion` alias only if it beats the current champion on the same validation records",
    )


def heads_result(outcome: TrainingOutcome, partitions: int, tracking_uri: str) -> dg.MaterializeResult:
    """Metadata of a training run (per-head table, macro-F1 against baselines) and the champion gate's result."""
    summary, gate_rows = outcome.summary, outcome.gate_rows
    return dg.MaterializeResult(
        metadata={
            "heads": preview(pl.DataFrame(summary), n=50) if summary else "none trained",
            "macro_f1": dg.MetadataValue.json({s["field"]: s["macro_f1"] for s in summary}),
            "baselines": dg.MetadataValue.json(
                {s["field"]: {"majority": s["majority"], "character_rule": s["character_rule"]} for s in summary}
            ),
            "not_better_than_majority": dg.MetadataValue.json(outcome.not_better_than_majority),
            "not_filling": dg.MetadataValue.json(outcome.not_filling),
            "unchanged": dg.MetadataValue.json(outcome.unchanged),
            "skipped": dg.MetadataValue.json(outcome.skipped),
            "partitions_seen": partitions,
            "mlflow_tracking_uri": tracking_uri,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=GATE,
                passed=not outcome.lost,
                severity=dg.AssetCheckSeverity.WARN,  # a losing challenger is recorded; the champion stays in service
                metadata={"comparisons": preview(pl.DataFrame(gate_rows), n=50) if gate_rows else "none"},
            )
        ],
    )
