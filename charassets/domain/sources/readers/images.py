"""Image folders (``format: images``): a folder tree of images, each optionally with a sidecar ``.txt`` of comma-separated tags.

The kohya training-set layout: one record per image, its path under the source root its
id and its image, its sidecar its tags. A folder holding images is one file of the source,
cut into chunks by its listing (sorted by name); a registered folder must not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import fsspec

from charassets.domain.sources.chunks import Chunk, Cuts, SourceChanged
from charassets.domain.sources.files import is_local
from charassets.domain.sources.records import frames_from_objects

if TYPE_CHECKING:
    import polars as pl

    from charassets.domain.sources.config import SourceSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def is_image(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def folder_listing(folder_uri: str) -> tuple[list[tuple[str, int]], set[str]]:
    """One listing of a folder: ``(name, bytes)`` of its images sorted by name (the rows of an image folder), and every file name."""
    fs, path = fsspec.core.url_to_fs(folder_uri)
    files = [(PurePosixPath(e["name"]).name, int(e.get("size") or 0)) for e in fs.ls(path, detail=True) if e["type"] == "file"]
    return sorted((n, b) for n, b in files if is_image(n)), {n for n, _ in files}


def image_folders(spec: SourceSpec, suffixes: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(uri, relative name)`` of each folder under the source root that holds images, sorted (``suffixes``: unused)."""
    fs, root = fsspec.core.url_to_fs(spec.uri)
    if not fs.isdir(root):
        raise FileNotFoundError(f"source {spec.name!r}: {spec.uri} is not a folder")
    folders = sorted({str(PurePosixPath(p).parent) for p in fs.find(root) if is_image(p)})
    if not folders:
        raise FileNotFoundError(f"source {spec.name!r}: no images under {spec.uri}")
    local = is_local(spec.uri)
    return [(d if local else fs.unstrip_protocol(d), str(PurePosixPath(d).relative_to(root))) for d in folders]


def _cut(spec: SourceSpec, uri: str) -> Cuts:
    """A folder's images in chunks of rows; its identity is a hash of its listing, its size that of its images."""
    images, _ = folder_listing(uri)
    n, step = len(images), spec.rows_per_partition
    identity = hashlib.blake2b("\n".join(f"{name}:{b}" for name, b in images).encode(), digest_size=8).hexdigest()
    return Cuts(identity, sum(b for _, b in images), [(0, 0, s, min(step, n - s)) for s in range(0, n, step)])


def _objects(chunk: Chunk, spec: SourceSpec) -> Iterator[tuple[int, Any, str]]:
    """One object per image of the chunk: its path under the source root and its sidecar tags (``None`` without one)."""
    fs, folder = fsspec.core.url_to_fs(chunk.file)
    _, root = fsspec.core.url_to_fs(spec.uri)
    rel_folder = PurePosixPath(folder).relative_to(root)
    listing, names_here = folder_listing(chunk.file)
    if chunk.file_bytes is not None and sum(b for _, b in listing) != chunk.file_bytes:
        # its chunks are slices of the registered listing: reading a changed folder would shift them
        raise SourceChanged(
            f"image folder {chunk.file} changed since it was registered ({chunk.file_bytes:,} bytes of images then, "
            f"{sum(b for _, b in listing):,} now): put new images in a new folder, or register the source afresh"
        )
    names = [n for n, _ in listing][chunk.row_start : chunk.row_start + chunk.row_count]
    for row, name in enumerate(names, chunk.row_start):
        rel = str(rel_folder / name) if str(rel_folder) != "." else name
        sidecar = PurePosixPath(name).with_suffix(".txt").name
        obj: Any = {"path": rel, "tags": None}
        if sidecar in names_here:  # known from the listing: no request per image to ask
            try:
                obj["tags"] = fs.cat_file(str(PurePosixPath(folder) / sidecar)).decode("utf-8-sig")
            except UnicodeDecodeError:
                obj = ValueError(f"sidecar {sidecar} is not valid UTF-8")
        yield row, obj, rel


class ImageFolderReader:
    """A ``SourceReader`` for image folders: every image is a record, decoded later by the image stage."""

    description = "an image folder"
    suffixes = ()  # a folder, never a file: only ``format: images`` names it
    layout = ({"id": "path", "tags": "tags", "image": "path"}, ",")
    decodes_images = True
    list_files = staticmethod(image_folders)

    def cut(self, spec: SourceSpec, uri: str) -> Cuts:
        return _cut(spec, uri)

    def read(self, chunk: Chunk, spec: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
        return frames_from_objects(_objects(chunk, spec), spec, chunk, excerpt_is_id=True)
