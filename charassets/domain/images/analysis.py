"""The one image path of the offline backend: a decoded picture -> faces, colours, flags, status.

``analyse`` is what ``extract --image``, the app and the graph all run (through
``signals.image_signals`` and the ``animeface`` backend), on one decoded image:

1. faces (``faces.scan_faces``): two passes on downscaled copies;
2. one small CIELAB canvas of the picture (``regions.canvas``) for the hair and the skin;
   the eyes are read from the picture itself;
3. each reading named by the palette (``ontology/colors.yaml``) and given a calibrated
   probability of being right (``calibration``); below ``IMAGE_MIN_CONFIDENCE`` the field
   stays ``unknown``, flagged ``low_evidence:<key>`` (a mixed or ambiguous region); a region
   with too few usable pixels is flagged ``occluded:<key>``.

Status: one face, ``ok``; several, ``ambiguous`` with ``faces:N`` and ``image_shows_several``
and every field unknown; none, ``ok`` when the hair (read without a face) is confident,
else ``ambiguous``, both flagged ``no_face_detected`` (and nothing is read where under
``MIN_SKIN_SHARE`` of the picture is skin: a picture without a face or skin shows no one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from charassets.domain.images import calibration, regions
from charassets.domain.images.colours import UNKNOWN, Palette, default_palette, to_hex
from charassets.domain.images.faces import FaceScan, confirmed, scan_faces
from charassets.domain.images.shapes import Face, ImageSignals

NAME = "animeface"
MIN_SKIN_SHARE = 0.05  # without a face, a character is assumed only where this much of the picture is skin
EVIDENCE_PART = {"hair": "hair", "eyes": "eye", "skin": "skin"}


@dataclass(frozen=True)
class Named:
    """One field read from the picture: the reading, the palette's name for it and the calibration inputs."""

    key: str
    reading: regions.Reading
    value: str
    distance: float
    margin: float
    features: tuple[float, ...]
    confidence: float


def _unknown(evidence: list[str] | None = None) -> dict:
    return {"value": UNKNOWN, "confidence": 0.0, "evidence": evidence or [], "source": "image"}


def _skin_reading(c: regions.Canvas, box) -> regions.Reading | None:
    skin = regions.face_skin(c, box)
    if skin is None:
        return None
    x, y, w, h = (round(v * c.scale) for v in box)
    patch = c.rgb[int(y + 0.55 * h) : int(y + 0.85 * h) + 1, int(x + 0.25 * w) : int(x + 0.75 * w) + 1].reshape(-1, 3)
    rgb = tuple(int(v) for v in np.median(patch, axis=0)) if len(patch) else (0, 0, 0)
    return regions.Reading(tuple(float(v) for v in skin), rgb, 1.0, 1.0, len(patch), True)


def name(key: str, reading: regions.Reading, palette: Palette, likelihood: float = 1.0) -> Named:
    """The palette's name for a reading, with its calibrated confidence (the palette's own score where no fit exists)."""
    m = palette.match_lab(key, np.asarray(reading.lab), likelihood)
    feats = calibration.feature_vector(m.margin, m.distance, reading.share, reading.placed_by_face)
    p = calibration.probability(key, feats)
    return Named(key, reading, m.value, m.distance, m.margin, feats, m.confidence if p is None else p)


def read_fields(image: Image.Image, scan: FaceScan, palette: Palette, constancy: bool = False) -> tuple[list[Face], list[Named], list[str]]:
    """Faces (second faces confirmed), the named readings of the main face (or of the picture without one), extra flags."""
    c = regions.canvas(image, constancy=constancy)
    main = scan.faces[0] if scan.faces else None
    skin_lab = regions.face_skin(c, main.box) if main else None
    kept = [main] if main else []
    unconfirmed = 0
    for other in scan.faces[1:]:
        if confirmed(other, skin_lab, c.lab, c.scale):
            kept.append(other)
        else:
            unconfirmed += 1
    flags = [f"small_faces_ignored:{scan.ignored}"] if scan.ignored else []
    flags += [f"unconfirmed_faces_ignored:{unconfirmed}"] if unconfirmed else []
    if main is None and regions.skin_share(c) < MIN_SKIN_SHARE:  # no face and hardly any skin: no character to read
        return [], [], [*flags, "no_skin_seen"]
    readings: dict[str, regions.Reading | None] = {"hair": regions.hair(c, main.box if main else None)}
    if main:
        readings["eyes"] = regions.eyes(image, main.eyes, skin_lab)
        readings["skin"] = _skin_reading(c, main.box)
    named = []
    for key, region in palette.regions.items():
        if key not in palette.fields or region not in readings:
            continue
        if readings[region] is None:  # the region is there but too little of it is left: hidden (hair over the eyes, a hand)
            flags.append(f"occluded:{key}")
            continue
        named.append(name(key, readings[region], palette, main.likelihood if main and region == "skin" else 1.0))
    seen = {r: reading.rgb for r, reading in readings.items() if reading is not None}
    faces = [
        Face(f.box, f.likelihood, *(seen.get(r, (0, 0, 0)) if f is main else (0, 0, 0) for r in ("hair", "eyes", "skin"))) for f in kept
    ]
    return faces, named, flags


def analyse(image: Image.Image, palette: Palette | None = None, constancy: bool = False) -> ImageSignals:
    """Faces, status, flags and calibrated colour attributes of one RGB picture (the offline backend's signals)."""
    palette = palette or default_palette()
    scan = scan_faces(image)
    faces, named, flags = read_fields(image, scan, palette, constancy)
    if len(faces) > 1:
        unknown = {k: _unknown() for k in palette.fields}
        return ImageSignals(NAME, faces, "ambiguous", [f"faces:{len(faces)}", "image_shows_several", *flags], unknown)
    if not faces:
        flags = ["no_face_detected", *flags]
    attributes = {}
    for n in named:
        part = EVIDENCE_PART.get(palette.regions[n.key], palette.regions[n.key])
        evidence = [f"{NAME}:{part}={to_hex(n.reading.rgb)}", f"delta_e={n.distance}", f"share={n.reading.share}"]
        if not n.reading.placed_by_face:
            evidence.append("no_face:upper_middle")
        if n.value.startswith("_"):  # a reference that names nothing notable (ordinary skin)
            attributes[n.key] = _unknown([*evidence, f"nearest={n.value[1:]}"])
        elif not calibration.accept(n.confidence):
            attributes[n.key] = _unknown([*evidence, f"below_threshold={n.value}@{n.confidence}"])
            flags.append(f"low_evidence:{n.key}")
        else:
            attributes[n.key] = {"value": n.value, "confidence": n.confidence, "evidence": evidence, "source": "image"}
    if not faces and not any(a["value"] != UNKNOWN for a in attributes.values()):
        return ImageSignals(NAME, faces, "ambiguous", flags, {k: attributes.get(k, _unknown()) for k in palette.fields})
    return ImageSignals(NAME, faces, "ok", flags, attributes)
