"""Finding a source's data files: a path, a folder or a glob, local or any fsspec URI (``hf://``, ``s3://``...)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import fsspec

if TYPE_CHECKING:
    from charassets.domain.sources.config import SourceSpec


def is_local(uri: str) -> bool:
    """Whether a source's URI is a local path (its files are then named by plain paths, not URIs)."""
    return uri.startswith("/") or "://" not in uri


def glob_base(path: str) -> str:
    """The folder a glob pattern's matches are named relative to: the part before the first wildcard."""
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return str(PurePosixPath(*parts[:i]))
    return str(PurePosixPath(path).parent)


def list_table_files(spec: SourceSpec, suffixes: Collection[str]) -> list[tuple[str, str]]:
    """``(uri, relative name)`` of each data file of a source, sorted: the file, the glob's matches, or a folder's files with one of ``suffixes``."""
    fs, path = fsspec.core.url_to_fs(spec.uri)
    if any(c in path for c in "*?["):
        found, base = fs.glob(path), glob_base(path)
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if PurePosixPath(p).suffix.lower() in suffixes]
        base = path
    else:
        found, base = [path], str(PurePosixPath(path).parent)
    if not found:
        raise FileNotFoundError(f"source {spec.name!r}: no files at {spec.uri}")
    local = is_local(spec.uri)
    out = []
    for p in sorted(found):
        uri = p if local else fs.unstrip_protocol(p)
        out.append((uri, str(PurePosixPath(p).relative_to(base)) if p.startswith(base) else PurePosixPath(p).name))
    return out
