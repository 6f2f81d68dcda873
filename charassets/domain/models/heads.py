"""Attribute heads: one small torch classifier per attribute, trained on record vectors.

The rule labels are weak supervision. A head for field F sees a record's vector with the
tags that *are* F's evidence removed (``masked_features``), so it learns what the rest
of the record says about F (the character, the series, the outfit) and can fill F where
the rules found nothing. Class imbalance is handled with inverse-frequency class weights;
the confidence threshold is chosen on validation data. Weights are saved as safetensors
with a JSON config: loading a head never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file
from torch import nn

TARGET_PRECISION = 0.9
MIN_CLASS_SUPPORT = 20  # validation predictions a class needs before its precision is trusted
NEVER = 2.0  # a class threshold no probability reaches: the class never fires


@dataclass(frozen=True)
class HeadConfig:
    """Hyperparameters of one head (``hidden=0`` is a linear head)."""

    hidden: int = 128
    epochs: int = 40
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    dropout: float = 0.1
    seed: int = 0


class _Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its masks from ``generator`` when one is set (torch's own kernel, spelled out: the same
    draws, mask and scaling as the global generator would give in the same state)."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.generator is None or self.p in (0, 1):  # torch draws nothing for these
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        keep.div_(1 - self.p)
        return x * keep


class AttributeHead(nn.Module):
    """A linear head, or one hidden layer (GELU, dropout) when ``config.hidden``.

    With a ``generator``, the initial weights and the dropout masks come from it rather than torch's global generator,
    drawn in the same order as ``nn.Linear`` and ``nn.Dropout`` would: a head seeded with ``config.seed`` is the same
    whichever thread fits it and whatever else runs beside (the global generator is shared by every thread).
    """

    def __init__(self, dim: int, n_classes: int, config: HeadConfig, generator: torch.Generator | None = None):
        super().__init__()
        if config.hidden:
            self.net = nn.Sequential(
                nn.Linear(dim, config.hidden), nn.GELU(), _Dropout(config.dropout), nn.Linear(config.hidden, n_classes)
            )
        else:
            self.net = nn.Linear(dim, n_classes)
        if generator is not None:
            for layer in self.modules():
                if isinstance(layer, nn.Linear):  # nn.Linear.reset_parameters, from the generator
                    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                    bound = 1 / math.sqrt(layer.in_features)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
                elif isinstance(layer, _Dropout):
                    layer.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class TrainedHead:
    """A head with everything needed to use and judge it."""

    field: str
    classes: list[str]
    dim: int
    config: HeadConfig
    module: AttributeHead
    threshold: float = 0.0
    meta: dict = field(default_factory=dict)
    multilabel: bool = False
    class_thresholds: list[float] = field(default_factory=list)  # one per class; NEVER: the class does not fire
    class_precision: list[float] = field(default_factory=list)  # validation precision at each class's threshold

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: softmax rows for single-label heads, independent sigmoids for multi-label ones."""
        self.module.eval()
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(np.require(x, dtype=np.float32, requirements=["C", "W"])))
            return (torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)).numpy()

    def predict_sets(self, proba: np.ndarray) -> np.ndarray:
        """Multi-label decisions: each class's probability against its own threshold."""
        return proba >= np.asarray(self.class_thresholds, dtype=np.float32)[None, :]

    def fires(self, proba: np.ndarray) -> np.ndarray:
        """Single-label decisions: the top class, where its probability clears that class's own threshold."""
        top = proba.argmax(1)
        return proba.max(1) >= np.asarray(self.class_thresholds, dtype=np.float32)[top]

    def calibrated(self, classes: np.ndarray) -> np.ndarray:
        """The validation precision of each given class index at its threshold: the confidence a filled value carries."""
        return np.asarray(self.class_precision or [0.0] * len(self.classes), dtype=np.float32)[classes]

    @property
    def firing_classes(self) -> list[str]:
        return [c for c, t in zip(self.classes, self.class_thresholds, strict=True) if t < NEVER]

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.module.state_dict().items()}, str(d / "weights.safetensors"))
        (d / "config.json").write_text(
            json.dumps(
                {
                    "field": self.field,
                    "classes": self.classes,
                    "dim": self.dim,
                    "threshold": self.threshold,
                    "config": asdict(self.config),
                    "meta": self.meta,
                    "multilabel": self.multilabel,
                    "class_thresholds": self.class_thresholds,
                    "class_precision": self.class_precision,
                },
                indent=2,
            )
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TrainedHead:
        d = Path(directory)
        cfg = json.loads((d / "config.json").read_text())
        config = HeadConfig(**cfg["config"])
        module = AttributeHead(cfg["dim"], len(cfg["classes"]), config)
        module.load_state_dict(load_file(str(d / "weights.safetensors")))
        return cls(
            cfg["field"],
            cfg["classes"],
            cfg["dim"],
            config,
            module,
            cfg["threshold"],
            cfg.get("meta", {}),
            cfg.get("multilabel", False),
            cfg.get("class_thresholds") or [NEVER] * len(cfg["classes"]),  # heads saved before per-class thresholds never fire
            cfg.get("class_precision", []),
        )


def stable_split(record_ids: list[str], labels: list[str], every: int = 5) -> np.ndarray:
    """Boolean mask of validation rows: records whose id hashes to 0 modulo ``every``.

    Stable (a record's side depends on its id alone, so it never moves as data grows) and
    stratified in expectation; a class that would get no validation record gives its
    lowest-hash record, so every class is measured.
    """
    h = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in record_ids], dtype=np.uint64)
    mask = (h % np.uint64(every)) == 0
    y = np.asarray(labels)
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if len(members) >= 2 and not mask[members].any():
            mask[members[np.argmin(h[members])]] = True
    return mask


def train_head(field: str, x: np.ndarray, labels: list[str], config: HeadConfig = HeadConfig()) -> TrainedHead:
    """Train with inverse-frequency class weights (the label space is long-tailed).

    Seeded by ``config.seed`` alone (initial weights, dropout, batch order): reproducible in any thread."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[v] for v in labels])
    counts = torch.bincount(y, minlength=len(classes)).float()
    weights = counts.sum() / (len(classes) * counts.clamp(min=1))
    module = AttributeHead(x.shape[1], len(classes), config, torch.Generator().manual_seed(config.seed))
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    gen = torch.Generator().manual_seed(config.seed)
    module.train()
    with torch.enable_grad():  # whatever the caller's grad mode
        _fit(module, opt, loss_fn, xt, y, config, gen)
    return TrainedHead(field, classes, x.shape[1], config, module)


def _fit(module, opt, loss_fn, xt, y, config: HeadConfig, gen) -> None:
    for _ in range(config.epochs):
        for batch in torch.randperm(len(y), generator=gen).split(config.batch_size):
            opt.zero_grad()
            loss_fn(module(xt[batch]), y[batch]).backward()
            opt.step()


def train_multilabel_head(field: str, x: np.ndarray, label_sets: list[list[str]], config: HeadConfig = HeadConfig()) -> TrainedHead:
    """Independent sigmoid per class, BCE with positive weights (rare styles count as much as common ones); seeded like
    ``train_head``."""
    classes = sorted({c for s in label_sets for c in s})
    y = torch.from_numpy(multi_hot(label_sets, classes))
    pos = y.sum(0)
    pos_weight = ((len(y) - pos) / pos.clamp(min=1)).clamp(max=50)
    module = AttributeHead(x.shape[1], len(classes), config, torch.Generator().manual_seed(config.seed))
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    module.train()
    with torch.enable_grad():
        _fit(module, opt, loss_fn, xt, y, config, torch.Generator().manual_seed(config.seed))
    return TrainedHead(field, classes, x.shape[1], config, module, multilabel=True)


def label_sets(chosen: np.ndarray, classes: list[str]) -> pl.Series:
    """Boolean (records, classes) decisions as one list of class names per record, built in Arrow."""
    import pyarrow as pa

    _, cols = np.nonzero(chosen)  # row-major: each record's classes in class order
    offsets = np.zeros(len(chosen) + 1, dtype=np.int32)
    np.cumsum(chosen.sum(1), out=offsets[1:])
    values = pa.array(classes, type=pa.string()).take(pa.array(cols, type=pa.int64()))
    return pl.Series(pa.ListArray.from_arrays(pa.array(offsets), values))


def multi_hot(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(label_sets), len(classes)), dtype=np.float32)
    for r, labels in enumerate(label_sets):
        for c in labels or []:
            if c in index:
                y[r, index[c]] = 1.0
    return y


def choose_class_thresholds(
    proba: np.ndarray, y: np.ndarray, target_precision: float = TARGET_PRECISION, min_support: int = MIN_CLASS_SUPPORT
) -> tuple[list[float], list[float]]:
    """Per class: the lowest probability at which its predictions reach ``target_precision`` on validation data.

    ``y`` is a multi-hot matrix (multi-label heads) or a vector of class indices
    (single-label heads, where a class is predicted when it is the top class). A class
    that never reaches the target with at least ``min_support`` predictions gets
    ``NEVER``: an undefined threshold means the class does not fire. Returns the
    thresholds and the precision each reaches (0.0 where it never fires).
    """
    multilabel = y.ndim == 2
    thresholds, precisions = [], []
    for k in range(proba.shape[1]):
        if multilabel:
            score, truth = proba[:, k], y[:, k] > 0
        else:
            picked = proba.argmax(1) == k
            score, truth = proba[picked, k], y[picked] == k
        chosen, precision = NEVER, 0.0
        order = np.argsort(-score, kind="stable")
        hits = np.cumsum(truth[order])
        n = np.arange(1, len(order) + 1)
        # scanning from the most confident down, keep the largest set that holds the target precision
        ok = (n >= min_support) & (hits / n >= target_precision)
        if ok.any():
            last = int(np.nonzero(ok)[0].max())
            chosen, precision = float(score[order][last]), float(hits[last] / n[last])
        thresholds.append(chosen)
        precisions.append(round(precision, 4))
    return thresholds, precisions


def masked_features(
    pooled: np.ndarray, weight_sums: np.ndarray, evidence: pl.Series | list[list[str]], cache, weights: np.ndarray
) -> np.ndarray:
    """Each record's vector with its evidence tags for one field taken out of the weighted mean.

    ``weights`` holds the pooling weight of every cached tag, aligned with ``cache.matrix``
    rows (``cache.weights(vocabulary)``); evidence tags the cache lacks were never pooled.
    """
    evidence = evidence if isinstance(evidence, pl.Series) else pl.Series(evidence, dtype=pl.List(pl.String))
    long = (
        pl.DataFrame({"tag": evidence})
        .with_row_index("record")
        .explode("tag")
        .join(cache.frame(), on="tag", how="inner")  # evidence tags that were pooled
    )
    if long.height == 0:
        return pooled
    rows, cols = long.get_column("record").to_numpy(), long.get_column("row").to_numpy()
    hit, local = np.unique(rows, return_inverse=True)  # only records with evidence change
    m = sp.csr_matrix((weights[cols].astype(np.float32), (local.ravel(), cols)), shape=(len(hit), cache.matrix.shape[0]))
    removed_w = np.asarray(m.sum(axis=1)).ravel().astype(np.float32)
    sums = weight_sums[hit].astype(np.float32)
    total = pooled[hit] * sums[:, None] - np.asarray(m @ cache.matrix, dtype=np.float32)
    part = total / np.maximum(sums - removed_w, 1e-12)[:, None]
    part[sums - removed_w <= 1e-6] = 0.0  # nothing left but the evidence
    out = np.array(pooled, dtype=np.float32, copy=True)
    out[hit] = part
    return out
