"""Where the hair and the eyes are, and their dominant colour, on a small CIELAB copy of the picture.

Everything here works on one ``Canvas``: the picture shrunk (box filter) to ``CANVAS_SIDE``
px on its long side, in CIELAB. Colour constancy (``shades_of_grey``, p = 6) was measured
on the dev labels and made the readings worse (illustrations are lit as drawn, and a white
background pulls the estimate): it is off, kept only to repeat that measurement
(``python -m charassets.domain.images.labels``).

- Hair, with a face: the band around and above the face box (bangs, crown, the sides of
  the head), without the lower face. Without a face: the upper middle of the picture.
  Pixels of the face's skin (or, without a face, of ordinary anime skin) and of the
  background (the colours of the picture's top corners) are left out; the rest is split
  into ``HAIR_CLUSTERS`` colours (k-means) and the largest is the hair.
- Eyes: the inner part of both eye boxes, read from the picture (they are small), without
  skin, sclera and highlights (bright and grey), lashes and pupils (dark); the median of
  the rest is the iris.

Each reading keeps the statistics that say how far to trust it (``Reading``): how much
of the region was left, how dominant the chosen colour is, whether a face placed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from charassets.domain.images.colours import to_lab

CANVAS_SIDE = 128
HAIR_CLUSTERS = 2
SKIN_DELTA_E = 14.0
BACKGROUND_DELTA_E = 8.0
CORNER = 1 / 8  # the top corners, as a share of each side: where the background shows
MIN_PIXELS = 12
EYE_INNER = (0.2, 0.8, 0.25, 0.95)  # the part of an eye box the iris is in: x from, x to, y from, y to
EYE_SIDE = 24  # each eye's inner part is read at this many pixels square
EYE_DARK_L, EYE_BRIGHT_L, EYE_GREY_CHROMA, EYE_SKIN_DELTA_E = 28.0, 82.0, 10.0, 18.0
# ordinary anime skin in CIELAB (lit to shaded): L, a, b ranges
SKIN_BOX = ((55.0, 97.0), (2.0, 30.0), (4.0, 35.0))


@dataclass(frozen=True)
class Canvas:
    rgb: np.ndarray  # (h, w, 3) sRGB uint8, colour-balanced where asked
    lab: np.ndarray  # (h, w, 3) CIELAB of the same pixels
    scale: float  # canvas pixels per picture pixel


@dataclass(frozen=True)
class Reading:
    lab: tuple[float, float, float]  # the chosen colour (cluster mean), CIELAB
    rgb: tuple[int, int, int]  # a representative pixel of it (the cluster's medoid), for the evidence
    share: float  # the chosen cluster's share of the pixels kept
    kept: float  # pixels kept / pixels in the region
    pixels: int  # pixels kept
    placed_by_face: bool


def shades_of_grey(rgb: np.ndarray, p: float = 6.0) -> np.ndarray:
    """Shades-of-grey colour constancy (Finlayson & Trezzi): each channel scaled so the p-norm mean is neutral."""
    x = rgb.astype(np.float64) / 255.0
    illuminant = np.power(np.mean(np.power(x.reshape(-1, 3), p), axis=0), 1.0 / p)
    gain = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return np.clip(x * gain * 255.0 + 0.5, 0, 255).astype(np.uint8)


def canvas(image: Image.Image, side: int = CANVAS_SIDE, constancy: bool = False) -> Canvas:
    scale = min(1.0, side / max(image.size))
    small = (
        image
        if scale == 1.0
        else image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BOX)
    )
    rgb = np.asarray(small.convert("RGB"))
    if constancy:
        rgb = shades_of_grey(rgb)
    return Canvas(rgb, to_lab(rgb.reshape(-1, 3)).reshape(rgb.shape), scale)


def kmeans(lab: np.ndarray, k: int, iterations: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (darkest pixel, then farthest-point seeds): centres and labels."""
    centres = [lab[int(np.argmin(lab[:, 0]))]]
    for _ in range(k - 1):
        d = np.min(((lab[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(lab[int(np.argmax(d))])
    c = np.array(centres, dtype=np.float64)
    for _ in range(iterations):
        labels = ((lab[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=lab[:, i], minlength=k) for i in range(3)], axis=1)
        c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
    return c, ((lab[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)


def _skin_box(lab: np.ndarray) -> np.ndarray:
    (l0, l1), (a0, a1), (b0, b1) = SKIN_BOX
    return (lab[:, 0] >= l0) & (lab[:, 0] <= l1) & (lab[:, 1] >= a0) & (lab[:, 1] <= a1) & (lab[:, 2] >= b0) & (lab[:, 2] <= b1)


def skin_share(c: Canvas) -> float:
    """The share of the canvas in the colours of ordinary anime skin."""
    return float(_skin_box(c.lab.reshape(-1, 3)).mean())


def _dominant(pixels: np.ndarray, rgb: np.ndarray, total: int, k: int, placed: bool) -> Reading | None:
    if len(pixels) < MIN_PIXELS:
        return None
    centres, labels = kmeans(pixels, min(k, len(pixels)))
    counts = np.bincount(labels, minlength=len(centres))
    j = int(counts.argmax())
    members = np.flatnonzero(labels == j)
    medoid = members[int(np.argmin(np.linalg.norm(pixels[members] - centres[j], axis=1)))]
    return Reading(
        tuple(round(float(v), 2) for v in centres[j]),
        tuple(int(v) for v in rgb[medoid]),
        round(float(counts[j] / len(pixels)), 4),
        round(len(pixels) / max(1, total), 4),
        len(pixels),
        placed,
    )


def face_skin(c: Canvas, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The face's skin colour: the median of its cheeks (the lower middle of the face box)."""
    x, y, w, h = (v * c.scale for v in box)
    patch = c.lab[int(y + 0.55 * h) : int(y + 0.85 * h) + 1, int(x + 0.25 * w) : int(x + 0.75 * w) + 1].reshape(-1, 3)
    return np.median(patch, axis=0) if len(patch) else None


def _background(c: Canvas) -> np.ndarray:
    """The distinct colours of (every other pixel of) the top corners: a flat background is a handful of colours."""
    n = max(1, round(min(c.lab.shape[:2]) * CORNER))
    return np.unique(np.concatenate([c.lab[:n, :n].reshape(-1, 3), c.lab[:n, -n:].reshape(-1, 3)])[::2], axis=0)


def nearest_distance(points: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Each point's CIELAB distance to the nearest reference (a k-d tree: no points x references array)."""
    from scipy.spatial import cKDTree

    return cKDTree(references).query(points, k=1)[0]


def _keep(pixels: np.ndarray, skin: np.ndarray | None, background: np.ndarray) -> np.ndarray:
    keep = np.linalg.norm(pixels - skin, axis=1) > SKIN_DELTA_E if skin is not None else ~_skin_box(pixels)
    if len(background):
        keep &= nearest_distance(pixels, background) > BACKGROUND_DELTA_E
    return keep


def hair(c: Canvas, box: tuple[int, int, int, int] | None) -> Reading | None:
    """The dominant colour of the hair region (around and above the face box, or the upper middle without one)."""
    h_, w_ = c.lab.shape[:2]
    mask = np.zeros((h_, w_), dtype=bool)
    skin = None
    if box is not None:
        x, y, w, h = (v * c.scale for v in box)

        def put(x0, x1, y0, y1, value=True):
            mask[max(0, int(y0)) : max(0, int(y1)), max(0, int(x0)) : max(0, int(x1))] = value

        put(x - 0.3 * w, x + 1.3 * w, y - 0.6 * h, y + 0.35 * h)  # crown and bangs
        put(x - 0.45 * w, x + 0.1 * w, y, y + h)  # the sides of the head
        put(x + 0.9 * w, x + 1.45 * w, y, y + h)
        put(x + 0.15 * w, x + 0.85 * w, y + 0.35 * h, y + h, False)  # not the face itself
        skin = face_skin(c, box)
    else:
        mask[: int(0.6 * h_), int(0.15 * w_) : int(0.85 * w_)] = True
    pixels = c.lab[mask]
    keep = _keep(pixels, skin, _background(c))
    return _dominant(pixels[keep], c.rgb[mask][keep], len(pixels), HAIR_CLUSTERS, box is not None)


def eyes(image: Image.Image, boxes: tuple[tuple[int, int, int, int], ...], skin: np.ndarray | None) -> Reading | None:
    """The iris colour: the inner part of both eye boxes, read from the picture itself (eyes are small on the canvas).

    Left out: the face's skin, sclera and highlights (bright and grey), and lashes and
    pupils (dark); the median of what is left is the iris.
    """
    lab, rgb = [], []
    for x, y, w, h in boxes:
        x0, x1, y0, y1 = x + EYE_INNER[0] * w, x + EYE_INNER[1] * w, y + EYE_INNER[2] * h, y + EYE_INNER[3] * h
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        crop = np.asarray(image.crop((round(x0), round(y0), round(x1), round(y1))).resize((EYE_SIDE, EYE_SIDE), Image.Resampling.BOX))
        rgb.append(crop.reshape(-1, 3))
        lab.append(to_lab(rgb[-1]))
    if not lab:
        return None
    pixels, colours = np.concatenate(lab), np.concatenate(rgb)
    chroma = np.hypot(pixels[:, 1], pixels[:, 2])
    keep = (pixels[:, 0] > EYE_DARK_L) & ~((pixels[:, 0] > EYE_BRIGHT_L) & (chroma < EYE_GREY_CHROMA))
    if skin is not None:
        keep &= np.linalg.norm(pixels - skin, axis=1) > EYE_SKIN_DELTA_E
    if keep.sum() < MIN_PIXELS:
        return None
    iris = np.median(pixels[keep], axis=0)
    near = np.flatnonzero(keep)[int(np.argmin(np.linalg.norm(pixels[keep] - iris, axis=1)))]
    spread = float(np.median(np.linalg.norm(pixels[keep] - iris, axis=1)))
    return Reading(
        tuple(round(float(v), 2) for v in iris),
        tuple(int(v) for v in colours[near]),
        round(1.0 / (1.0 + spread / 10.0), 4),  # 1: one colour; lower: mixed
        round(float(keep.mean()), 4),
        int(keep.sum()),
        True,
    )
