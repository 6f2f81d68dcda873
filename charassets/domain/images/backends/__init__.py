"""Image signal backends behind one interface, chosen by one spec string.

    animeface                 the offline default: AnimeFace 2009 faces, colours named in CIELAB
    wd:<folder or hub id>     a WD-style ONNX tagger; its tags go through the caller's tag reader
    clip:<hub id or path>     animeface counts the faces, CLIP/SigLIP zero-shot prompts name attributes

``parse_backend`` is the one parser of those strings, ``BACKENDS`` the registry (kind ->
factory) and ``load_backend`` builds one. Backends never import the record pipeline: a
backend that reads tags (``wd``) is *given* a ``TagReader``, a function from a list of tags
to the record the text path makes of them (``charassets.domain.pipeline.extract_one``, say).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from charassets.domain.specs import ModelSpec, parse_spec

if TYPE_CHECKING:
    from PIL import Image

    from charassets.domain.images.shapes import ImageSignals

DEFAULT_BACKEND = "animeface"

# tags -> the record the text path makes of them: {"status", "flags", "attributes": {display name: attribute}}
TagReader = Callable[[list[str]], dict]


class ImageBackend(Protocol):
    """Turns one decoded RGB picture into ``ImageSignals`` (faces, status, flags, attributes by field key)."""

    name: str

    def signals(self, image: Image.Image) -> ImageSignals: ...


BackendSpec = ModelSpec  # an image backend named by a spec string (``specs.parse_spec``)


def _animeface(target: str, ontology, tag_reader: TagReader | None) -> ImageBackend:
    from charassets.domain.images.backends.animeface import AnimeFaceBackend

    return AnimeFaceBackend()


def _wd(target: str, ontology, tag_reader: TagReader | None) -> ImageBackend:
    from charassets.domain.images.backends.wd import TaggerBackend, cached_tagger

    if tag_reader is None:
        raise ValueError("the wd backend reads tags: pass a tag reader (tags -> record), e.g. built from pipeline.extract_one")
    return TaggerBackend(cached_tagger(target), ontology, tag_reader)


def _clip(target: str, ontology, tag_reader: TagReader | None) -> ImageBackend:
    from charassets.domain.images.backends.clip import ClipBackend, cached_model

    return ClipBackend(cached_model(target), ontology)


# kind -> factory(target, ontology, tag reader); NEEDS_TARGET: whether the kind takes "kind:<target>"
BACKENDS: dict[str, Callable[[str, object, TagReader | None], ImageBackend]] = {"animeface": _animeface, "wd": _wd, "clip": _clip}
NEEDS_TARGET = {"animeface": False, "wd": True, "clip": True}
USAGE = "use 'animeface', 'wd:<folder or hub id>' or 'clip:<hub id or path>'"


def parse_backend(spec: str) -> BackendSpec:
    """``animeface`` | ``wd:<folder or hub id>`` | ``clip:<hub id or path>`` -> ``BackendSpec``; ``ValueError`` otherwise."""
    return parse_spec(spec, NEEDS_TARGET, "image backend", USAGE)


def load_backend(spec: str | BackendSpec, ontology, tag_reader: TagReader | None = None) -> ImageBackend:
    """The backend a spec names (heavy models are loaded once per process and spec)."""
    parsed = spec if isinstance(spec, BackendSpec) else parse_backend(spec)
    return BACKENDS[parsed.kind](parsed.target, ontology, tag_reader)
