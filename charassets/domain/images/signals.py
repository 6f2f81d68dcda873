"""Image signals: how many characters an image shows, and the colours the ontology names.

A backend turns an RGB image into faces (box, likelihood, measured hair / eye / skin
colour). The default, ``AnimeFaceBackend``, runs offline: the ``animeface`` package
(AnimeFace 2009) ships its model inside the wheel. Measured colours are mapped to the
ontology's named colours by the nearest reference shade in CIELAB
(``ontology/colors.yaml``), with a confidence from the face likelihood and how clearly
the nearest name beats the next one.

One face: status ``ok``. Several: ``ambiguous`` (flag ``faces:N``). None: ``ambiguous``
with flag ``no_face_detected`` and every colour ``unknown``: a back view or a tiny
figure says nothing reliable about hair or eye colour. Detections much smaller than the
largest face (side < ``min_relative_size`` of it) are ignored and counted in a flag:
on illustrations they are mostly ornaments, lace or hands read as faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml
from PIL import Image, ImageCms

COLORS_FILE = Path(__file__).resolve().parents[2] / "ontology" / "colors.yaml"
UNKNOWN = "unknown"


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB uint8 -> (n, 3) CIELAB (L 0..100, a/b about -128..127), through Pillow's colour management."""
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(1, -1, 3)
    transform = _srgb_to_lab()
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, mode="RGB"), transform), dtype=np.float64).reshape(-1, 3)
    return np.column_stack([lab[:, 0] * 100.0 / 255.0, lab[:, 1] - 128.0, lab[:, 2] - 128.0])


@lru_cache(maxsize=1)
def _srgb_to_lab():
    return ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")


@dataclass(frozen=True)
class ColorMatch:
    value: str
    confidence: float
    distance: float  # CIELAB distance (ΔE76) to the nearest reference shade


class Palette:
    """Named reference colours per field; ``match`` names a measured colour."""

    def __init__(self, references: dict[str, dict[str, list[list[int]]]]):
        self.fields: dict[str, tuple[list[str], np.ndarray]] = {}
        for key, names in references.items():
            labels = [n for n, shades in names.items() for _ in shades]
            self.fields[key] = (labels, to_lab(np.array([s for shades in names.values() for s in shades])))

    @classmethod
    def load(cls, path: str | Path = COLORS_FILE) -> Palette:
        return cls(yaml.safe_load(Path(path).read_text()))

    def match(self, key: str, rgb: tuple[int, int, int], likelihood: float = 1.0) -> ColorMatch:
        labels, refs = self.fields[key]
        d = np.linalg.norm(refs - to_lab(np.array([rgb]))[0], axis=1)
        best = int(d.argmin())
        other = min((d[i] for i, n in enumerate(labels) if n != labels[best]), default=np.inf)
        margin = 1.0 if not np.isfinite(other) else float((other - d[best]) / (other + d[best] + 1e-9))
        closeness = float(np.exp(-max(0.0, d[best] - 15.0) / 30.0))  # far from every reference: doubt
        return ColorMatch(labels[best], round(likelihood * margin * closeness, 4), round(float(d[best]), 2))


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height
    likelihood: float
    hair: tuple[int, int, int]
    eyes: tuple[int, int, int]  # mean of both eyes
    skin: tuple[int, int, int]
    # CIELAB distance between the left and right eye readings. Not turned into a heterochromia
    # flag: the readings are noisy (over 35 on 22 of the 46 single-face dev images, none of
    # which shows different eyes), so a flag would mostly be wrong.
    eyes_delta_e: float = 0.0


@dataclass
class ImageSignals:
    backend: str
    faces: list[Face]
    status: str  # ok | ambiguous
    flags: list[str] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)  # field key -> {value, confidence, evidence, source}

    @property
    def subject(self) -> str:
        return {0: "none", 1: "single"}.get(len(self.faces), "multiple")


class SignalBackend(Protocol):
    name: str

    def faces(self, image: Image.Image) -> list[Face]: ...


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@lru_cache(maxsize=1)
def _animeface_seeder():
    """``nv_srand`` of the loaded animeface extension: its colour sampling is random, seeded from the clock."""
    import ctypes

    from animeface import _nvxs

    lib = ctypes.CDLL(_nvxs.__file__)  # the already-loaded library: the same random state
    lib.nv_srand.argtypes = [ctypes.c_ulong]
    lib.nv_srand.restype = None
    return lib.nv_srand


class AnimeFaceBackend:
    """The offline default: AnimeFace 2009 face detection with per-face hair, eye and skin colour.

    The library samples colours at random (the same image read twice gave hair colours
    from #cfc7ca to #fbf5f6); it is seeded before every image, so a result depends on the
    image alone.
    """

    name = "animeface"

    def __init__(self, min_likelihood: float = 0.5, max_side: int = 1024, seed: int = 11):
        self.min_likelihood = min_likelihood
        self.max_side = max_side
        self.seed = seed

    def faces(self, image: Image.Image) -> list[Face]:
        import animeface

        _animeface_seeder()(self.seed)

        scale = 1.0
        if max(image.size) > self.max_side:  # detection cost grows with area; faces survive downscaling
            scale = self.max_side / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
        out = []
        for f in animeface.detect(image):
            if f.likelihood < self.min_likelihood:
                continue
            left, right = f.left_eye.color, f.right_eye.color
            lr = np.array([[left.r, left.g, left.b], [right.r, right.g, right.b]])
            lab = to_lab(lr)
            b = f.face.pos
            out.append(
                Face(
                    box=tuple(round(v / scale) for v in (b.x, b.y, b.width, b.height)),
                    likelihood=round(float(f.likelihood), 4),
                    hair=(f.hair.color.r, f.hair.color.g, f.hair.color.b),
                    eyes=tuple(int(v) for v in lr.mean(0).round()),
                    skin=(f.skin.color.r, f.skin.color.g, f.skin.color.b),
                    eyes_delta_e=round(float(np.linalg.norm(lab[0] - lab[1])), 2),
                )
            )
        return out


def image_signals(
    image: Image.Image, backend: SignalBackend | None = None, palette: Palette | None = None, min_relative_size: float = 0.4
) -> ImageSignals:
    """Faces, status and colour attributes of one RGB image."""
    backend = backend or AnimeFaceBackend()
    palette = palette or _default_palette()
    detected = backend.faces(image)
    largest = max((f.box[2] for f in detected), default=0)
    faces = [f for f in detected if f.box[2] >= min_relative_size * largest]
    ignored = [f"small_faces_ignored:{len(detected) - len(faces)}"] if len(faces) < len(detected) else []
    if len(faces) != 1:
        flags = (["no_face_detected"] if not faces else [f"faces:{len(faces)}"]) + ignored
        unknown = {k: {"value": UNKNOWN, "confidence": 0.0, "evidence": [], "source": "image"} for k in palette.fields}
        return ImageSignals(backend.name, faces, "ambiguous", flags, unknown)
    face = faces[0]
    attributes, flags = {}, list(ignored)
    for key, part, rgb in (("hair_color", "hair", face.hair), ("eye_color", "eye", face.eyes), ("ethnicity", "skin", face.skin)):
        if key not in palette.fields:
            continue
        m = palette.match(key, rgb, face.likelihood)
        evidence = [f"{backend.name}:{part}={_hex(rgb)}", f"delta_e={m.distance}"]
        if m.value.startswith("_"):  # a reference that names nothing notable (ordinary skin)
            attributes[key] = {"value": UNKNOWN, "confidence": 0.0, "evidence": [*evidence, f"nearest={m.value[1:]}"], "source": "image"}
            continue
        attributes[key] = {"value": m.value, "confidence": m.confidence, "evidence": evidence, "source": "image"}
    return ImageSignals(backend.name, faces, "ok", flags, attributes)


@lru_cache(maxsize=1)
def _default_palette() -> Palette:
    return Palette.load()


@lru_cache(maxsize=4)
def _wd_tagger(spec: str):
    from charassets.domain.images.backends.wd import WDTagger

    return WDTagger.load(spec)


@lru_cache(maxsize=2)
def _clip(spec: str):
    from charassets.domain.images.backends.clip import ClipImageModel

    return ClipImageModel(spec)


def signals_for(image: Image.Image, backend: str, ontology) -> ImageSignals:
    """Signals from the backend named by config.

    ``animeface`` (offline default); ``wd:<folder or hub id>`` (a WD-style ONNX tagger: tags
    through the text path); ``clip:<hub id or path>`` (animeface counts the faces, CLIP or
    SigLIP zero-shot prompts name the attributes of a single-character image).
    """
    if backend == "animeface":
        return image_signals(image)
    if backend.startswith("wd:"):
        from charassets.domain.images.backends.wd import tagger_signals

        return tagger_signals(image, _wd_tagger(backend[3:]), ontology)
    if backend.startswith("clip:"):
        counted = image_signals(image)
        if counted.status != "ok":
            return ImageSignals("clip", counted.faces, counted.status, counted.flags, counted.attributes)
        model = _clip(backend[5:])
        answers = model.zero_shot(model.encode_images([image]), ontology)[0]
        return ImageSignals("clip", counted.faces, "ok", counted.flags, {**counted.attributes, **answers})
    raise ValueError(f"unknown image backend {backend!r}: use 'animeface', 'wd:<folder or hub id>' or 'clip:<hub id or path>'")


def rejected_image_record(name: str | None, reason: str | None) -> dict:
    """A rejected image in the attribute table's JSON shape."""
    return {
        "id": name,
        "record_id": None,
        "status": "rejected",
        "reason": reason,
        "subject_count": None,
        "flags": [],
        "characters": [],
        "attributes": None,
    }


def image_record(data, name: str, ontology, backend: str = "animeface") -> dict:
    """One image (bytes, or an already ``DecodedImage``) as the attribute table's JSON shape, plus its ``image`` facts.

    Unreadable input gives ``status: rejected`` with the reason. Only an ``ok`` record has
    attributes (as for tag records); fields the image says nothing about are unknown.
    """
    from charassets.domain.images.decode import ImageRejected, decode_image

    base = rejected_image_record(name, None)
    try:
        decoded = decode_image(data) if isinstance(data, bytes | bytearray) else data
    except ImageRejected as e:
        return {**base, "reason": str(e)}
    signals = signals_for(decoded.image, backend, ontology)
    attributes = None
    if signals.status == "ok":
        attributes = {}
        for f in ontology.fields:
            empty = {"value": [] if f.cardinality == "multi" else UNKNOWN, "confidence": 0.0, "evidence": [], "source": None}
            attributes[f.name] = signals.attributes.get(f.key, empty)
    return {
        **base,
        "record_id": f"image:{decoded.sha256[:16]}",  # by content: the same picture under any name
        "status": signals.status,
        "subject_count": len(signals.faces) if signals.faces else None,
        "flags": signals.flags + (["animated"] if decoded.animated else []),
        "attributes": attributes,
        "image": image_facts(decoded, signals, name),
    }


def image_facts(decoded, signals: ImageSignals | None, ref: str | None) -> dict:
    """The ``image`` object of a record, as the table holds it (``schema.ImageFacts``)."""
    return {
        "ref": ref,
        "sha256": decoded.sha256,
        "phash": decoded.phash,
        "width": decoded.width,
        "height": decoded.height,
        "format": decoded.format,
        "mode": decoded.mode,
        "frames": decoded.frames,
        "backend": signals.backend if signals else None,
        "faces": len(signals.faces) if signals else None,
        "face_boxes": [list(f.box) for f in signals.faces] if signals else [],
    }


def reconcile(tag_attributes: dict[str, dict], image: ImageSignals, min_confidence: float = 0.5) -> tuple[dict[str, dict], list[str]]:
    """Tags and image signals for one record: tags win; a confident image value fills what the tags leave unknown.

    Returns the merged attributes (keyed by field key) and the flags: ``image_disagrees:<key>=<image value>``
    where both name a value and differ, ``image_shows_several`` where the image has several faces.
    Tags saying ``multicolored`` agree with any single colour read from the image (a face
    reading samples one region of a multicoloured head).
    """
    merged, flags = dict(tag_attributes), []
    for key, seen in image.attributes.items():
        if seen["value"] in (UNKNOWN, [], None):
            continue
        told = merged.get(key)
        if told is None or told["value"] in (UNKNOWN, []):
            if seen["confidence"] >= min_confidence:
                merged[key] = seen
        elif told["value"] != seen["value"] and told["value"] != "multicolored":
            flags.append(f"image_disagrees:{key}={seen['value']}")
    if any(f.startswith("faces:") for f in image.flags):
        flags.append("image_shows_several")
    return merged, flags
