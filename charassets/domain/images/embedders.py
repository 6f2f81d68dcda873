"""Image embedders, chosen by a spec string: the offline default ``colorlayout`` or ``clip:<hub id or path>``.

``colorlayout`` needs no weights: a 12x12 grid of mean CIELAB colours (the image's colour
layout, as in MPEG-7's descriptor) and a 4x4x4 CIELAB histogram, standardised and
unit-normalised. It sees where which colours are (hair above, dress below), which is what
the colour attributes need, and nothing of shapes: heads on it are a baseline that a CLIP
or SigLIP checkpoint (``clip:...``, through transformers) replaces where weights are at hand.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from charassets.domain.images.colours import to_lab
from charassets.domain.specs import NEEDS, NONE, parse_spec

GRID = 12
BINS = 4


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class ColorLayoutEmbedder:
    """Colour layout plus colour histogram, in CIELAB: deterministic, offline, ~1 ms per thumbnail."""

    id: str = f"colorlayout-{GRID}x{GRID}-lab"

    @property
    def dim(self) -> int:
        return GRID * GRID * 3 + BINS**3

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        rows = []
        for im in images:
            grid = to_lab(np.asarray(im.convert("RGB").resize((GRID, GRID), Image.Resampling.BOX), dtype=np.float64).reshape(-1, 3))
            small = to_lab(np.asarray(im.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR), dtype=np.float64).reshape(-1, 3))
            # L in [0, 100], a and b in about [-110, 110]: bins over those ranges
            idx = np.clip(((small + [0.0, 110.0, 110.0]) / [100.0, 220.0, 220.0] * BINS).astype(int), 0, BINS - 1)
            hist = np.bincount(idx[:, 0] * BINS * BINS + idx[:, 1] * BINS + idx[:, 2], minlength=BINS**3) / len(small)
            layout = (grid - [50.0, 0.0, 0.0]) / [50.0, 60.0, 60.0]
            rows.append(np.concatenate([layout.ravel(), 4.0 * np.sqrt(hist)]))
        return _normalise(np.asarray(rows)) if rows else np.zeros((0, self.dim), dtype=np.float32)


def load_image_embedder(spec: str, device: str = "cpu"):
    """``colorlayout`` (offline default) or ``clip:<hub id or local path>`` (CLIP / SigLIP through transformers)."""
    parsed = parse_spec(spec, {"colorlayout": NONE, "clip": NEEDS}, "image embedder", "use 'colorlayout' or 'clip:<hub id or path>'")
    if parsed.kind == "colorlayout":
        return ColorLayoutEmbedder()
    from charassets.domain.images.backends.clip import ClipImageModel

    return ClipImageModel(parsed.target, device=device)


def thumbnails(blobs: list[bytes]) -> list[Image.Image]:
    """Thumbnails as stored in ``raw/images`` (WebP bytes) back to RGB images."""
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
