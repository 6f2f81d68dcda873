"""Deterministic demo data: messy Danbooru-style tag records at any size (``records``), drawn from a catalogue of looks (``catalogue``)."""

from charassets.domain.demo.catalogue import META, QUALITY, SCENE, SCENERY, Character, artist_names, load_characters
from charassets.domain.demo.records import LAYOUTS, embedded_feature_tags, embedded_vocabulary_rows, generate, write_embedded_vocabulary

__all__ = [
    "LAYOUTS",
    "META",
    "QUALITY",
    "SCENE",
    "SCENERY",
    "Character",
    "artist_names",
    "embedded_feature_tags",
    "embedded_vocabulary_rows",
    "generate",
    "load_characters",
    "write_embedded_vocabulary",
]
