"""Image signals and image records: what a picture says, in the attribute table's shape.

``ImageSignals`` (faces, status, flags, attributes by field key) is what every backend
returns; ``image_signals`` is the offline default's (``analysis.analyse``: faces at two
scales, hair and eyes read around them, colours named in CIELAB with calibrated
confidence), ``signals_for`` runs the backend a spec string names (``backends``).

``image_record`` is a picture as a record of the final table, for ``extract --image`` and
the app; the graph runs the same ``signals_for`` where ``raw/images`` decodes the picture,
and its final table holds the same record (``test_image_labels`` compares the two on the
dev pictures). The threshold both apply is ``calibration.accept``. A picture together with
tags is decided by the graph's resolver (``candidates.decide``, through ``pipeline.extract_one``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from PIL import Image

from charassets.domain.images.calibration import accept
from charassets.domain.images.colours import UNKNOWN, Palette
from charassets.domain.images.shapes import Face, ImageSignals

__all__ = ["Face", "ImageSignals", "image_record", "image_signals", "signals_for"]

if TYPE_CHECKING:
    from charassets.domain.images.backends import TagReader


class FaceBackend(Protocol):
    """A face detector: faces (box, likelihood, measured colours) of an RGB image."""

    name: str

    def faces(self, image: Image.Image) -> list[Face]: ...


def image_signals(image: Image.Image, palette: Palette | None = None) -> ImageSignals:
    """Faces, status, flags and calibrated colour attributes of one RGB image: the offline backend (``analysis.analyse``)."""
    from charassets.domain.images.analysis import analyse

    return analyse(image, palette)


def signals_for(image: Image.Image, backend: str, ontology, tag_reader: TagReader | None = None) -> ImageSignals:
    """Signals from the backend a spec string names (``backends.parse_backend``).

    ``tag_reader`` (tags -> record) is needed by backends that read tags (``wd:...``).
    """
    from charassets.domain.images.backends import load_backend

    return load_backend(backend, ontology, tag_reader).signals(image)


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


def image_record(data, name: str, ontology, backend: str = "animeface", tag_reader: TagReader | None = None) -> dict:
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
    signals = signals_for(decoded.image, backend, ontology, tag_reader)
    attributes = None
    if signals.status == "ok":
        attributes = {}
        for f in ontology.fields:
            empty = {"value": [] if f.cardinality == "multi" else UNKNOWN, "confidence": 0.0, "evidence": [], "source": None}
            seen = signals.attributes.get(f.key)
            # as the final table decides: a value the field's fill policy lets an image give, confident enough
            usable = seen is not None and seen["value"] not in (UNKNOWN, [], None) and "image" in f.fill and accept(seen["confidence"])
            attributes[f.name] = seen if usable else empty
    return {
        **base,
        "record_id": f"image:{decoded.sha256[:16]}",  # by content: the same picture under any name
        "status": signals.status,
        "subject_count": len(signals.faces) if signals.faces else None,
        "flags": ["image_only", *signals.flags] + (["animated"] if decoded.animated else []),
        "attributes": attributes,
        "image": image_facts(decoded, signals, name),
    }


def image_facts(decoded, signals: ImageSignals | None, ref: str | None) -> dict:
    """The ``image`` object of a record, as the table holds it (``schema.ImageFacts``): face boxes in the picture's own pixels."""
    sx, sy = decoded.width / decoded.image.width, decoded.height / decoded.image.height  # a large picture is decoded smaller
    boxes = (
        [[round(x * sx), round(y * sy), round(w * sx), round(h * sy)] for x, y, w, h in (f.box for f in signals.faces)] if signals else []
    )
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
        "face_boxes": boxes,
    }
