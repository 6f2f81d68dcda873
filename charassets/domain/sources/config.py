"""The sources file: ``SourcesConfig``, one ``SourceSpec`` per source, and its column mapping (``ColumnMapping``, ``LAYOUTS``).

A source names a format registered in ``readers.READERS`` (or none: each file's suffix says).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from charassets.domain.sources.readers import READERS, format_of_suffix, reader
from charassets.domain.sources.records import TAG_FIELDS

MAX_PARTITION_ROWS = 100_000
IMAGE_ROWS_PER_PARTITION = 1_000  # images cost ~0.2 s each: smaller partitions keep runs short


class ColumnMapping(BaseModel):
    """Which input column holds what. ``tags`` is one ordered string; the others are per category."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = "id"
    tags: str | None = None
    general: str | None = None
    character: str | None = None
    copyright: str | None = None
    artist: str | None = None
    meta: str | None = None
    rating: str | None = None
    image: str | None = None

    def tag_columns(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in TAG_FIELDS if getattr(self, f)}


LAYOUTS: dict[str, tuple[ColumnMapping, str]] = {
    # one ordered, comma-separated tag string per row (training-prompt style)
    "ordered": (ColumnMapping(id="id", tags="tags", rating="rating", image="image"), ","),
    # Danbooru's post export: one space-separated string per tag category
    "danbooru": (
        ColumnMapping(
            id="id",
            general="tag_string_general",
            character="tag_string_character",
            copyright="tag_string_copyright",
            artist="tag_string_artist",
            meta="tag_string_meta",
            rating="rating",
            image="file_url",
        ),
        " ",
    ),
}
# the column mapping of each format whose records have one fixed shape (an image folder's), built once
_FIXED: dict[str, tuple[ColumnMapping, str]] = {
    name: (ColumnMapping(**r.layout[0]), r.layout[1]) for name, r in READERS.items() if r.layout is not None
}


class SourceSpec(BaseModel):
    """One source of records, as declared in the sources file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    uri: str
    format: str | None = None  # a name in READERS; none: each file's suffix says
    layout: Literal["ordered", "danbooru"] = "ordered"
    columns: ColumnMapping | None = None
    separator: str | None = None
    rows_per_partition: int = Field(default=50_000, ge=1, le=MAX_PARTITION_ROWS)
    images: bool = False  # decode the image column (always on for a format that always decodes, such as ``images``)
    # image references may be http(s) URLs, fetched with a byte cap, timeouts and only from public
    # addresses (image_fetch); off: only paths under the source's own root (never file://, s3://...)
    remote_images: bool = False

    @field_validator("format")
    @classmethod
    def _registered(cls, fmt: str | None) -> str | None:
        if fmt is not None:
            reader(fmt)  # an unknown name: the error lists the registered ones
        return fmt

    @model_validator(mode="after")
    def _needs_tags(self) -> SourceSpec:
        if self.decodes_images and "rows_per_partition" not in self.model_fields_set:
            self.rows_per_partition = IMAGE_ROWS_PER_PARTITION
        if self.format in _FIXED:
            if self.columns is not None:
                raise ValueError(f"source {self.name!r}: {READERS[self.format].description} has no columns to map")
        elif not self.mapping.tag_columns() and not (self.images and self.mapping.image):
            raise ValueError(f"source {self.name!r}: the column mapping names no tag column (and no decoded image column)")
        if self.images and not self.mapping.image:
            raise ValueError(f"source {self.name!r}: images: true, but the column mapping names no image column")
        return self

    @property
    def mapping(self) -> ColumnMapping:
        if self.format in _FIXED:  # e.g. one record per image file: its path is its id, its sidecar its tags
            return _FIXED[self.format][0]
        return self.columns or LAYOUTS[self.layout][0]

    @property
    def tag_separator(self) -> str:
        if self.format in _FIXED:
            return _FIXED[self.format][1]
        return self.separator if self.separator is not None else LAYOUTS[self.layout][1]

    @property
    def decodes_images(self) -> bool:
        return self.images or (self.format is not None and READERS[self.format].decodes_images)

    def format_of(self, file: str) -> str:
        if self.format:
            return self.format
        return format_of_suffix(PurePosixPath(file.split("?")[0]).suffix.lower())


class SourcesConfig(BaseModel):
    """The sources file: a list of sources (relative paths are relative to the file)."""

    model_config = ConfigDict(extra="forbid")
    sources: list[SourceSpec]

    @model_validator(mode="after")
    def _unique(self) -> SourcesConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names: {names}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> SourcesConfig:
        path = Path(path)
        data = yaml.safe_load(path.read_text()) or {}
        for s in data.get("sources", []):
            uri = str(s.get("uri", ""))
            if "://" not in uri and not Path(uri).is_absolute():
                s["uri"] = str((path.parent / uri).resolve())
        return cls.model_validate(data)

    def get(self, name: str) -> SourceSpec:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source named {name!r} (known: {[s.name for s in self.sources]})")
