"""The attribute ontology, loaded from data: tag -> (field, value, rank, confidence).

The YAML file (``charassets/ontology/attributes.yaml``) is the only place that says which
tag means what; see its header for the format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl
import yaml

from charassets.domain.resolve import SOURCES

DEFAULT_ONTOLOGY = Path(__file__).resolve().parent.parent / "ontology" / "attributes.yaml"
TIERS = {"strong": (2, 0.98), "values": (1, 0.90), "weak": (0, 0.60)}
TAG_VALUE = "_tag_"
# Every source that can decide a value, in order of trust; a field's ``fill`` lists the ones it allows.
FILL_SOURCES = SOURCES  # the sources a field's ``fill`` policy may name, in order of trust (``resolve.PRECEDENCE``)
RULES_SCHEMA = {"tag": pl.String, "field": pl.String, "value": pl.String, "rank": pl.Int8, "confidence": pl.Float32}


@dataclass(frozen=True)
class FieldSpec:
    """One output attribute: its display name, column key, and allowed values."""

    name: str
    key: str
    required: bool
    cardinality: Literal["single", "multi"]
    values: tuple[str, ...] | None  # None: open-ended (values are tag names)
    max_unknown_rate: float | None = None
    several: Literal["conflict", "first", "ordinal"] = "conflict"
    fill: tuple[str, ...] = FILL_SOURCES  # which sources may decide this field (see FILL_SOURCES)
    families: dict[str, str] = field(default_factory=dict)  # finer value -> its family (``double bun`` -> ``bun``)


@dataclass(frozen=True)
class SubjectRules:
    """Tags that say how many characters a record shows."""

    counts: dict[str, tuple[str, int]]
    single: frozenset[str]
    none: frozenset[str]
    character_ignore: tuple[re.Pattern[str], ...]

    def counts_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"tag": list(self.counts), "group": [g for g, _ in self.counts.values()], "n": [n for _, n in self.counts.values()]},
            schema={"tag": pl.String, "group": pl.String, "n": pl.Int32},
        )


@dataclass(frozen=True)
class Ontology:
    """Fields, exact tag rules, pattern rules and subject rules."""

    fields: tuple[FieldSpec, ...]
    rules: pl.DataFrame
    patterns: tuple[tuple[re.Pattern[str], str, str, int, float], ...]
    subjects: SubjectRules
    source: str = field(default="")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ONTOLOGY) -> Ontology:
        data = yaml.safe_load(Path(path).read_text())
        fields, rows, patterns = [], [], []
        for name, spec in data["fields"].items():
            values: list[str] = []
            for tier, (rank, conf) in TIERS.items():
                for value, tags in (spec.get(tier) or {}).items():
                    if value not in values:
                        values.append(value)
                    for tag in tags:
                        tag = str(tag)
                        if tag.startswith("re:"):
                            patterns.append((re.compile(tag[3:]), name, value, rank, conf))
                        else:
                            rows.append((tag, name, value, rank, conf))
            open_ended = values == [TAG_VALUE]
            if TAG_VALUE in values and not open_ended:
                raise ValueError(f"{name}: {TAG_VALUE} cannot be mixed with named values")
            fill = tuple(spec.get("fill", FILL_SOURCES))
            if "tags" not in fill or not set(fill) <= set(FILL_SOURCES):
                raise ValueError(f"{name}: fill must include 'tags' and name only {FILL_SOURCES}, got {fill}")
            families = {str(v): str(fam) for fam, members in (spec.get("families") or {}).items() for v in members}
            fields.append(
                FieldSpec(
                    name=name,
                    key=spec["key"],
                    required=bool(spec.get("required", False)),
                    cardinality=spec.get("cardinality", "single"),
                    values=None if open_ended else tuple(values),
                    max_unknown_rate=spec.get("max_unknown_rate"),
                    several=spec.get("several", "conflict"),
                    fill=tuple(s for s in FILL_SOURCES if s in fill),
                    families=families,
                )
            )
        keys = [f.key for f in fields]
        if len(set(keys)) != len(keys) or not all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in keys):
            raise ValueError(f"field keys must be unique snake_case names: {keys}")
        rules = pl.DataFrame(rows, schema=RULES_SCHEMA, orient="row")
        # one rule per (tag, field): the highest rank wins if a tag is listed twice
        rules = rules.sort("rank", descending=True).unique(["tag", "field"], keep="first", maintain_order=True)
        subj = data["subjects"]
        subjects = SubjectRules(
            counts={str(t): (g, int(n)) for t, (g, n) in subj["counts"].items()},
            single=frozenset(subj.get("single", [])),
            none=frozenset(subj.get("none", [])),
            character_ignore=tuple(re.compile(p[3:]) for p in subj.get("character_tag_ignore", [])),
        )
        return cls(fields=tuple(fields), rules=rules, patterns=tuple(patterns), subjects=subjects, source=str(path))

    def field(self, name_or_key: str) -> FieldSpec:
        """A field by display name or key, in any case; ``KeyError`` naming the fields when none matches."""
        wanted = name_or_key.strip().lower()
        for f in self.fields:
            if wanted in (f.name.lower(), f.key):
                return f
        raise KeyError(f"no attribute {name_or_key!r}; attributes are: {', '.join(f.name for f in self.fields)}")

    @property
    def families(self) -> dict[str, dict[str, str]]:
        """``field key -> {finer value: family}`` where the ontology declares families."""
        return {f.key: f.families for f in self.fields if f.families}

    def allows(self, key: str, source: str) -> bool:
        """Whether ``source`` may decide field ``key`` (its fill policy)."""
        return source in self.field(key).fill

    def _pattern_rules(self, distinct: pl.Series) -> pl.DataFrame:
        """The pattern rules matching whole tag names, ordered by tag (as in ``distinct``), then by pattern.

        Each pattern runs over every tag at once in polars (Rust's regex: a real partition's 20k distinct tags took
        0.08 s through Python's ``re``, one tag at a time). A pattern Rust's regex cannot compile (a lookaround,
        a back-reference) is matched with Python's ``re``; both match whole names only, as ``re.fullmatch``.
        """
        frame = distinct.to_frame("tag").with_row_index("_t")
        parts = []
        for i, (rx, fname, value, rank, conf) in enumerate(self.patterns):
            try:
                hits = frame.filter(pl.col("tag").str.contains(f"^(?:{rx.pattern})$"))
            except pl.exceptions.ComputeError:
                hits = frame.filter(pl.col("tag").map_elements(lambda t, rx=rx: rx.fullmatch(t) is not None, return_dtype=pl.Boolean))
            parts.append(
                hits.with_columns(
                    pl.lit(i, dtype=pl.UInt32).alias("_p"),
                    pl.lit(fname).alias("field"),
                    pl.lit(value).alias("value"),
                    pl.lit(rank).alias("rank"),
                    pl.lit(conf).alias("confidence"),
                )
            )
        if not parts:
            return pl.DataFrame(schema=RULES_SCHEMA)
        return pl.concat(parts).sort("_t", "_p").select(pl.col(k).cast(t) for k, t in RULES_SCHEMA.items())

    def rules_for(self, tags: pl.Series) -> pl.DataFrame:
        """Rules matching the given tags: exact ones, plus patterns where no exact rule exists.

        Patterns are tried once per distinct tag. ``_tag_`` values become the tag's name.
        """
        distinct = tags.unique().drop_nulls()
        exact = self.rules.join(distinct.to_frame("tag"), on="tag", how="semi")
        out = pl.concat([exact, self._pattern_rules(distinct).join(exact, on=["tag", "field"], how="anti", maintain_order="left")])
        out = out.unique(["tag", "field"], keep="first", maintain_order=True)
        return out.with_columns(
            pl.when(pl.col("value") == TAG_VALUE).then(pl.col("tag").str.replace_all("_", " ")).otherwise(pl.col("value")).alias("value")
        )
