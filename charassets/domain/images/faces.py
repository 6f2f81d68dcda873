"""Counting faces: AnimeFace 2009 at two scales, the second pass mirrored, on downscaled copies.

The detector's cost grows with the number of windows it scores, i.e. with the area it
searches, so it never sees the full picture:

1. a coarse pass on a copy ``COARSE_SIDE`` px on its long side finds the faces that fill a
   good part of the picture (portraits, busts: most of them);
2. only where that finds nothing, a finer pass (``FINE_SIDE``) over the top ``FINE_TOP`` of
   the picture, mirrored: small faces of full-body and group pictures sit high in the
   frame, and the detector is not symmetric, so a mirrored look finds faces the first
   missed (profiles, three-quarter views).

Detections of the two passes are merged by overlap. A detection much smaller than the
largest face (side < ``MIN_RELATIVE_SIZE`` of it) is an ornament, lace or a hand and is
dropped (and counted). A second face of low likelihood counts only when a second signal
confirms it: its box holds skin of the colour of the first face's (``confirmed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

COARSE_SIDE = 192
FINE_SIDE = 320
FINE_TOP = 0.6  # the share of the picture's height the fine pass searches
MIN_RELATIVE_SIZE = 0.4
SURE_LIKELIHOOD = 0.9  # a second face below this needs a second signal
SKIN_DELTA_E = 14.0  # how near a pixel must be to the first face's skin to count as the same skin
SKIN_SHARE = 0.25  # the share of a candidate box that must be such skin


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


@lru_cache(maxsize=1)
def _seeder():
    """``nv_srand`` of the loaded animeface extension: its colour sampling is random, seeded from the clock."""
    import ctypes

    from animeface import _nvxs

    lib = ctypes.CDLL(_nvxs.__file__)  # the already-loaded library: the same random state
    lib.nv_srand.argtypes = [ctypes.c_ulong]
    lib.nv_srand.restype = None
    return lib.nv_srand


def _detect(image: Image.Image, side: int, top: float = 1.0, mirror: bool = False, seed: int = 11) -> list[Detection]:
    """Faces of ``image`` searched on a copy ``side`` px on its long side (the top ``top`` of it), boxes in ``image`` pixels."""
    import animeface

    scale = min(1.0, side / max(image.size))
    small = image if scale == 1.0 else image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    if top < 1.0:
        small = small.crop((0, 0, small.width, max(1, round(small.height * top))))
    if mirror:
        small = ImageOps.mirror(small)
    _seeder()(seed)
    out = []
    for f in animeface.detect(small):

        def back(b) -> tuple[int, int, int, int]:
            x = small.width - b.x - b.width if mirror else b.x
            return tuple(round(v / scale) for v in (x, b.y, b.width, b.height))

        eyes = (back(f.left_eye.pos), back(f.right_eye.pos))
        out.append(Detection(back(f.face.pos), round(float(f.likelihood), 4), eyes[::-1] if mirror else eyes))
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
        found = [("fine_mirrored", d) for d in _detect(image, FINE_SIDE, FINE_TOP, mirror=True)]
        passes.append("fine_mirrored")
    faces = merge(found)
    largest = max((f.box[2] for f in faces), default=0)
    kept = [f for f in faces if f.box[2] >= MIN_RELATIVE_SIZE * largest]
    kept.sort(key=lambda f: (-f.box[2] * f.box[3], f.box[0]))  # the largest face first
    return FaceScan(kept, ignored=len(faces) - len(kept), passes=passes)
