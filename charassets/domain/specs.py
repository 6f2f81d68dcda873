"""One parser for model spec strings: ``kind`` or ``kind:target``.

Every configurable model is named this way: text embedders (``minilm``, ``hashing:256``,
``hf:<hub id or path>``), image backends (``animeface``, ``wd:<folder or hub id>``,
``clip:<hub id or path>``) and image embedders (``colorlayout``, ``clip:<hub id or path>``).
Each caller says which kinds it accepts and whether each needs a target; ``parse_spec``
splits the string and refuses anything else with the caller's usage line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

NEEDS = True  # the kind must be followed by ":<target>"
NONE = False  # the kind takes no target
OPTIONAL = None  # either


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    target: str  # what follows "kind:" (a folder, hub id, path or number); "" when none

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind


def parse_spec(spec: str, accepted: Mapping[str, bool | None], what: str, usage: str) -> ModelSpec:
    """``spec`` as a ``ModelSpec`` of one of the ``accepted`` kinds (kind -> NEEDS / NONE / OPTIONAL); ``ValueError`` otherwise."""
    kind, sep, target = spec.strip().partition(":")
    needs = accepted.get(kind, "unknown")
    if needs == "unknown" or (sep and not target) or (needs is NEEDS and not target) or (needs is NONE and target):
        raise ValueError(f"unknown {what} {spec!r}: {usage}")
    return ModelSpec(kind, target)
