"""One rule decides every attribute value: each source offers a candidate, the first in ``PRECEDENCE`` wins.

The attribute value is defined once here: ``value_dtype`` (the polars struct the tables
hold) and ``value_model`` (the pydantic model the output schema is built from), both
``{value, confidence, evidence, source}``.

Sources, in order of trust (``PRECEDENCE``):

1. ``tags``: the record's own tags decided the field;
2. ``identity``: the tags conflict, or name several values, and the character's profile
   supports one of them (reported as source ``tags``: the tags said it, the identity chose);
3. ``profile``: no tag evidence; the character's profile value clears the field's fill threshold;
4. ``image``: a colour read from the record's picture, at or above its calibrated threshold
   (``images.calibration.IMAGE_MIN_CONFIDENCE``);
5. ``head``: a text head's prediction, where its class holds its precision on this partition;
6. ``image_head``: an image head's prediction.

A source offers a candidate only for the fields whose ``fill`` policy names it (see
``attributes.yaml``), and only where its own condition holds (a profile never overrides
tag evidence, a head never fills a field the tags argue about). ``resolve`` itself is a
``coalesce`` over those candidate columns in this order: no per-row Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Optional

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, create_model

if TYPE_CHECKING:
    from charassets.domain.ontology import FieldSpec

UNKNOWN = "unknown"
PRECEDENCE: tuple[str, ...] = ("tags", "identity", "profile", "image", "head", "image_head")
REPORTED_AS = {"identity": "tags"}  # a candidate whose ``source`` names another kind of evidence
# the ``source`` a value may carry, in order of trust: the schema's enum and the fill policies' vocabulary
SOURCES: tuple[str, ...] = tuple(dict.fromkeys(REPORTED_AS.get(s, s) for s in PRECEDENCE))


def value_dtype(multi: bool) -> pl.Struct:
    """The attribute value as the tables hold it: ``value`` a string (single) or a list of strings (multi)."""
    value = pl.List(pl.String) if multi else pl.String
    return pl.Struct({"value": value, "confidence": pl.Float32, "evidence": pl.List(pl.String), "source": pl.String})


def attribute_value(value: pl.Expr, confidence: pl.Expr, evidence: pl.Expr, source: str | pl.Expr) -> pl.Expr:
    """The value struct from its four parts (confidence rounded to 4 places)."""
    return pl.struct(
        value.alias("value"),
        confidence.cast(pl.Float32).round(4).alias("confidence"),
        evidence.alias("evidence"),
        (pl.lit(source) if isinstance(source, str) else source).cast(pl.String).alias("source"),
    )


def empty_value(multi: bool) -> pl.Expr:
    """Nothing known: ``unknown`` (or no values), confidence 0, no evidence, no source."""
    empty = pl.lit([], dtype=pl.List(pl.String))
    return attribute_value(empty if multi else pl.lit(UNKNOWN), pl.lit(0.0), empty, pl.lit(None, dtype=pl.String))


def value_model(spec: FieldSpec) -> type[BaseModel]:
    """The pydantic model of one field's value: the same four parts, with the field's closed set of values."""
    allowed: Any = str if spec.values is None else Literal[tuple(spec.values)]  # type: ignore[valid-type]
    if spec.cardinality == "single":
        value_type: Any = Literal[(*spec.values, UNKNOWN)] if spec.values is not None else str  # type: ignore[misc]
    else:
        value_type = list[allowed]
    return create_model(
        spec.key.title().replace("_", "") + "Value",
        __config__=ConfigDict(extra="forbid"),
        value=(
            value_type,
            Field(
                description=f"{spec.name}: "
                + ("one value, or 'unknown'" if spec.cardinality == "single" else "every value found; empty when none")
            ),
        ),
        confidence=(float, Field(ge=0.0, le=1.0)),
        evidence=(list[str], Field(description="the tags (or model, or profile) the value rests on")),
        source=(Optional[Literal[SOURCES]], Field(default=None, description="which kind of evidence decided the value")),  # noqa: UP045
    )


def decided(value: pl.Expr, multi: bool) -> pl.Expr:
    """Whether a value says something (not ``unknown``, not an empty list)."""
    return (value.list.len() > 0) if multi else (value != UNKNOWN)


def resolve(candidates: Mapping[str, pl.Expr], fallback: pl.Expr) -> pl.Expr:
    """The first candidate that is not null, in ``PRECEDENCE`` order; ``fallback`` where no source offers one.

    Each candidate is a value struct, null on the rows where its source has nothing to
    offer (the caller builds that condition from the source's own rule and the field's
    fill policy).
    """
    unknown = set(candidates) - set(PRECEDENCE)
    if unknown:
        raise ValueError(f"not a source in PRECEDENCE {PRECEDENCE}: {sorted(unknown)}")
    return pl.coalesce([candidates[s] for s in PRECEDENCE if s in candidates] + [fallback])
