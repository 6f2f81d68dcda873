"""Counting faces: AnimeFace 2009 at two scales, the second pass mirrored, on downscaled copies.

The detector's cost grows with the number of windows it scores, i.e. with the area it
searches, so it never sees the full picture:

1. a coarse pass on a copy ``COARSE_SIDE`` px on its long side finds the faces that fill a
   good part of the picture (portraits, busts: most of them);
2. only where that finds nothing, a finer pass (``FINE_SIDE``) over the top ``FINE_TOP`` of
   the picture, mirrored: small faces of full-body and group pictures sit high in the
   frame, and the detector is not symmetric, so a mirrored look finds faces the first
   missed (profiles, three-quarter views).

Both passes call the library's detector directly (``nvxs``: no colour sampling, which this
project does not use). The coarse pass searches as ``animeface.detect`` does; the fine pass,
over a larger copy, uses a coarser pyramid (``FINE_SCALE_FACTOR`` 1.2, against the wheel's
1.095): on the labelled dev pictures it gives the same figures at about half the pass's cost
(the step and factors tried are in the README's image section).

Detections of the two passes are merged by overlap. A detection much smaller than the
largest face (side < ``MIN_RELATIVE_SIZE`` of it) is an ornament, lace or a hand and is
dropped (and counted). A second face of low likelihood counts only when a second signal
confirms it: its box holds skin of the colour of the first face's (``confirmed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageOps

from charassets.domain.images import nvxs

COARSE_SIDE = 192
FINE_SIDE = 320
FINE_TOP = 0.6  # the share of the picture's height the fine pass searches
MIN_RELATIVE_SIZE = 0.4
SURE_LIKELIHOOD = 0.9  # a second face below this needs a second signal
SKIN_DELTA_E = 14.0  # how near a pixel must be to the first face's skin to count as the same skin
SKIN_SHARE = 0.25  # the share of a candidate box that must be such skin
# the detector's search (``nvxs``): window step (in units of the window's scale) and pyramid factor
STEP = nvxs.WHEEL_STEP
SCALE_FACTOR = nvxs.WHEEL_SCALE_FACTOR
FINE_STEP = nvxs.WHEEL_STEP
FINE_SCALE_FACTOR = 1.2
REDUCING_GAP = 1.0  # box-reduce by the integer part of the scale first (Pillow), then resample: same faces on the dev pictures, cheaper


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, width, height in the picture's own pixels
    likelihood: float
    eyes: tuple[tuple[int, int, int, int], ...]  # left and right eye boxes, same pixels
    passes: tuple[str, ...] = ("coarse",)


@dataclass
class FaceScan:
    faces: list[Detection]
    ignored: int = 0  # small detections dropped
    unconfirmed: int = 0  # low-likelihood second faces no second signal confirmed
    passes: list[str] = field(default_factory=list)


def _detect(
    image: Image.Image, side: int, top: float = 1.0, mirror: bool = False, step: float = STEP, scale_factor: float = SCALE_FACTOR
) -> list[Detection]:
    """Faces of ``image`` searched on a copy ``side`` px on its long side (the top ``top`` of it), boxes in ``image`` pixels."""
    scale = min(1.0, side / max(image.size))
    small = (
        image
        if scale == 1.0
        else image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
    )
    if top < 1.0:
        small = small.crop((0, 0, small.width, max(1, round(small.height * top))))
    if mirror:
        small = ImageOps.mirror(small)
    out = []
    for f in nvxs.detect(np.asarray(small if small.mode == "RGB" else small.convert("RGB")), step=step, scale_factor=scale_factor):

        def back(b) -> tuple[int, int, int, int]:
            x = small.width - b[0] - b[2] if mirror else b[0]
            return tuple(round(v / scale) for v in (x, b[1], b[2], b[3]))

        eyes = (back(f.left_eye), back(f.right_eye))
        out.append(Detection(back(f.face), round(f.likelihood, 4), eyes[::-1] if mirror else eyes))
    return out


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1, a[2] * a[3] + b[2] * b[3] - inter)


def merge(found: list[tuple[str, Detection]]) -> list[Detection]:
    """One detection per face: the most likely of those that overlap (IoU > 0.25), with every pass that saw it."""
    out: list[Detection] = []
    for name, d in sorted(found, key=lambda t: -t[1].likelihood):
        same = next((i for i, o in enumerate(out) if _overlap(o.box, d.box) > 0.25), None)
        if same is None:
            out.append(replace(d, passes=(name,)))
        elif name not in out[same].passes:
            out[same] = replace(out[same], passes=(*out[same].passes, name))
    return out


def confirmed(face: Detection, skin_lab: np.ndarray | None, lab: np.ndarray, scale: float) -> bool:
    """The second signal for a doubtful face: its box holds enough skin of the first face's colour."""
    if face.likelihood >= SURE_LIKELIHOOD:
        return True
    if skin_lab is None:
        return False
    x, y, w, h = (round(v * scale) for v in face.box)
    patch = lab[max(0, y) : y + max(1, h), max(0, x) : x + max(1, w)].reshape(-1, 3)
    return len(patch) > 0 and float((np.linalg.norm(patch - skin_lab, axis=1) < SKIN_DELTA_E).mean()) >= SKIN_SHARE


def scan_faces(image: Image.Image) -> FaceScan:
    """Faces of an RGB picture, by the two passes above (boxes in the picture's pixels), before any confirmation."""
    found = [("coarse", d) for d in _detect(image, COARSE_SIDE)]
    passes = ["coarse"]
    if not found:
        found = [
            ("fine_mirrored", d) for d in _detect(image, FINE_SIDE, FINE_TOP, mirror=True, step=FINE_STEP, scale_factor=FINE_SCALE_FACTOR)
        ]
        passes.append("fine_mirrored")
    faces = merge(found)
    largest = max((f.box[2] for f in faces), default=0)
    kept = [f for f in faces if f.box[2] >= MIN_RELATIVE_SIZE * largest]
    kept.sort(key=lambda f: (-f.box[2] * f.box[3], f.box[0]))  # the largest face first
    return FaceScan(kept, ignored=len(faces) - len(kept), passes=passes)
