"""Calibrated confidence of a colour read from a picture, and the one threshold every path uses.

A reading (``regions.Reading``) named by the palette (``colours.ColorMatch``) becomes a
probability of being right by a logistic (Platt) fit on a few physical statistics:

- ``margin``: how clearly the nearest named colour beats the next one (0 a tie, 1 no rival);
- ``closeness``: how near the nearest reference shade is (1 on it, falling with ΔE);
- ``share``: how dominant the chosen colour is in its region (a mixed region is doubtful);
- ``face``: whether a face placed the region (1) or the region is a guess without one (0).

The coefficients (``COEFFICIENTS``) were fitted on the hand-labelled dev images
(``charassets_tests/data/images_dev_labels.csv``) by ``fit``; ``cross_validated`` gives the
out-of-fold probabilities a test checks for calibration. ``IMAGE_MIN_CONFIDENCE`` is the
smallest calibrated probability at which a value is shown: below it the field stays
``unknown`` (flag ``low_evidence:<key>``). It comes from the same fit: the lowest
threshold (on a 0.025 grid) whose out-of-fold precision on hair colour reaches
``TARGET_PRECISION`` (``threshold_from``; 10-fold, averaged over 5 shuffles). Fields
without labels (skin tone) keep the palette's own score, which is not calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

IMAGE_MIN_CONFIDENCE = 0.675
TARGET_PRECISION = 0.8
FEATURES = ("margin", "closeness", "share", "face")
# field key -> (intercept, one weight per FEATURES), fitted by ``fit`` on the dev labels (see the module doc)
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "hair_color": (-0.0071, 0.641, 0.4304, 0.251, 0.7912),
    "eye_color": (0.8499, 0.5496, 0.3207, 0.1294, 0.0006),
}
REGULARISATION = 1.0  # inverse L2 strength of the logistic fit (scikit-learn's C)


def feature_vector(margin: float, distance: float, share: float, face: bool) -> tuple[float, ...]:
    """The calibration inputs of one reading, each on a 0..1 scale."""
    return (float(margin), math.exp(-max(0.0, float(distance)) / 30.0), float(share), 1.0 if face else 0.0)


def probability(key: str, features: Sequence[float], coefficients: dict[str, tuple[float, ...]] | None = None) -> float | None:
    """P(the named value is right) for a field with a fit; None for a field without one."""
    c = (coefficients or COEFFICIENTS).get(key)
    if c is None:
        return None
    z = c[0] + sum(w * x for w, x in zip(c[1:], features, strict=True))
    return round(1.0 / (1.0 + math.exp(-z)), 4)


def accept(confidence: float) -> bool:
    """Whether an image reading with this (calibrated) confidence is shown: the rule every path applies."""
    return confidence >= IMAGE_MIN_CONFIDENCE


def fit(x: np.ndarray, y: np.ndarray, c: float = REGULARISATION) -> tuple[float, ...]:
    """Platt scaling on the features: (intercept, weights...) of an L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=1000).fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=int))
    return (round(float(model.intercept_[0]), 4), *(round(float(w), 4) for w in model.coef_[0]))


def cross_validated(x: np.ndarray, y: np.ndarray, folds: int = 10, seed: int = 0, c: float = REGULARISATION) -> np.ndarray:
    """Out-of-fold probabilities: each reading scored by a fit that never saw it (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=int)
    out = np.zeros(len(y))
    splits = StratifiedKFold(n_splits=min(folds, int(min(np.bincount(y, minlength=2)))), shuffle=True, random_state=seed)
    for train, test in splits.split(x, y):
        coef = fit(x[train], y[train], c)
        out[test] = [probability("_", row, {"_": coef}) for row in x[test]]
    return out


def threshold_from(x: np.ndarray, y: np.ndarray, target: float = TARGET_PRECISION, seeds: int = 5) -> float:
    """The lowest threshold (0.5, 0.525, ...) at which values shown are right at least ``target`` of the time, out of fold."""
    y = np.asarray(y, dtype=bool)
    probs = [cross_validated(x, y, seed=s) for s in range(seeds)]
    for t in np.arange(0.5, 0.951, 0.025):
        shown = sum(int((p >= t).sum()) for p in probs)
        if shown and sum(int(y[p >= t].sum()) for p in probs) / shown >= target:
            return round(float(t), 3)
    return 0.95


def reliability(
    confidences: Sequence[float], right: Sequence[bool], edges: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0001)
) -> list[dict]:
    """Per confidence bin: readings, mean confidence, share right (a reliability table)."""
    p, r = np.asarray(confidences, dtype=np.float64), np.asarray(right, dtype=bool)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (p >= lo) & (p < hi)
        if inside.any():
            rows.append(
                {
                    "bin": f"[{lo:.1f}, {min(hi, 1.0):.1f})",
                    "n": int(inside.sum()),
                    "mean_confidence": round(float(p[inside].mean()), 3),
                    "accuracy": round(float(r[inside].mean()), 3),
                }
            )
    return rows
