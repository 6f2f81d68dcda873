"""Worker processes a build lends, for the length of a block, to work that can spread over them.

``runner.build_everything`` holds worker processes for its partition runs. Between those runs they would
idle while this process trains the heads or makes the dataset report: within ``lending(pool)`` the heads'
fits (``models.fitting``) and the report's scans (``report.figures``) go to them. Work that finds nothing
lent runs in this process.

A task runs in another process: what it reads through a ``tables.DeclaredLake`` is checked there against the
asset's declared tables, but recorded in that process's ``seen`` reads, not this one's.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

_LENT: dict[str, object] = {}


@contextmanager
def lending(pool: Executor | None, width: int = 2) -> Iterator[None]:
    """Within the block, ``lent()`` gives ``pool`` (None: nothing is lent) and ``width``, the tasks it runs at once."""
    before = dict(_LENT)
    _LENT.clear()
    if pool is not None:
        _LENT.update(pool=pool, width=max(1, width))
    try:
        yield
    finally:
        _LENT.clear()
        _LENT.update(before)


def lent() -> tuple[Executor | None, int]:
    """The pool lent here (None when nothing is) and how many tasks it runs at once."""
    return _LENT.get("pool"), int(_LENT.get("width", 1))  # type: ignore[return-value, call-overload]
