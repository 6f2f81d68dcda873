"""The output schema: one pydantic model per record, built from the ontology.

Keys are exactly the display names (``Hair Color``...); values are
``{value, confidence, evidence, source}``. The model's JSON Schema is the manifest
written next to the data for downstream training.
"""

import gc
from functools import lru_cache
from typing import Any, Literal, Optional

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, model_validator

from charassets.domain.ontology import FieldSpec, Ontology
from charassets.domain.resolve import SOURCES, value_model
from charassets.domain.tags.extraction import STATUSES, UNKNOWN


@lru_cache(maxsize=8)
def _models(ontology_path: str) -> tuple[type[BaseModel], type[BaseModel]]:
    ontology = Ontology.load(ontology_path)
    fields: dict[str, Any] = {}
    for spec in ontology.fields:
        vm = value_model(spec)
        fields[spec.key] = (vm, Field(alias=spec.name)) if spec.required else (Optional[vm], Field(default=None, alias=spec.name))  # noqa: UP045
    attributes_model = create_model("CharacterAttributes", __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)

    class CharacterRecord(BaseModel):
        """One record of the attribute table."""

        model_config = ConfigDict(extra="forbid")
        id: Optional[str] = Field(description="the record's id in its source (null if it had none)")  # noqa: UP045
        record_id: Optional[str] = Field(description="stable id: <source>:<id>")  # noqa: UP045
        source: str
        partition: str
        status: Literal[STATUSES]  # type: ignore[valid-type]
        reason: Optional[str] = Field(default=None, description="why a record was rejected")  # noqa: UP045
        subject_count: Optional[int] = Field(default=None, ge=0)  # noqa: UP045
        flags: list[str] = Field(default_factory=list)
        characters: list[str] = Field(default_factory=list, description="named characters (Danbooru character tags)")
        attributes: Optional[attributes_model] = None  # type: ignore[valid-type]  # noqa: UP045
        image: Optional[ImageFacts] = Field(default=None, description="the record's image, for records that have one")  # noqa: UP045

        @model_validator(mode="after")
        def _attributes_iff_ok(self) -> "CharacterRecord":
            if (self.status == "ok") != (self.attributes is not None):
                raise ValueError(f"status {self.status!r} with attributes {'present' if self.attributes else 'absent'}")
            if self.status == "rejected" and not self.reason:
                raise ValueError("a rejected record needs a reason")
            return self

    return attributes_model, CharacterRecord


class ImageFacts(BaseModel):
    """The picture behind a record, where it has one."""

    model_config = ConfigDict(extra="forbid")
    ref: Optional[str] = Field(default=None, description="path under the source root, URL, or 'embedded' (bytes in the source table)")  # noqa: UP045
    sha256: Optional[str] = Field(default=None, description="content hash (null when the image could not be decoded)")  # noqa: UP045
    phash: Optional[str] = Field(default=None, description="64-bit perceptual hash, hex")  # noqa: UP045
    width: Optional[int] = Field(default=None, ge=1)  # noqa: UP045
    height: Optional[int] = Field(default=None, ge=1)  # noqa: UP045
    format: Optional[str] = None  # noqa: UP045
    mode: Optional[str] = Field(default=None, description="Pillow mode as stored (CMYK, P, LA, I;16...), before conversion to RGB")  # noqa: UP045
    frames: Optional[int] = Field(default=None, ge=1, description="frames of an animated image (the first is used)")  # noqa: UP045
    backend: Optional[str] = Field(default=None, description="the image-signal backend that read it")  # noqa: UP045
    faces: Optional[int] = Field(default=None, ge=0, description="faces the image backend found")  # noqa: UP045
    face_boxes: list[list[int]] = Field(default_factory=list, description="x, y, width, height of each face")


IMAGE_DTYPE = pl.Struct(
    {
        "ref": pl.String,
        "sha256": pl.String,
        "phash": pl.String,
        "width": pl.Int32,
        "height": pl.Int32,
        "format": pl.String,
        "mode": pl.String,
        "frames": pl.Int32,
        "backend": pl.String,
        "faces": pl.Int32,
        "face_boxes": pl.List(pl.List(pl.Int32)),
    }
)


def record_model(ontology: Ontology) -> type[BaseModel]:
    return _models(ontology.source)[1]


def json_schema(ontology: Ontology) -> dict[str, Any]:
    schema = record_model(ontology).model_json_schema(by_alias=True)
    schema["$comment"] = "charassets character attribute record; one JSON object per line in the exports"
    return schema


def to_json_frame(mart: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """The mart in the output shape: display-name keys under ``attributes``."""
    ok = pl.col("status") == "ok"
    attrs = pl.struct(
        [pl.col(f.key).struct.with_fields(pl.field("confidence").cast(pl.Float64).round(4)).alias(f.name) for f in ontology.fields]
    )
    return mart.select(
        pl.col("source_id").alias("id"),
        "record_id",
        "source",
        "partition",
        "status",
        "reason",
        "subject_count",
        "flags",
        "characters",
        pl.when(ok).then(attrs).alias("attributes"),
        (pl.col("image") if "image" in mart.columns else pl.lit(None, dtype=IMAGE_DTYPE)).alias("image"),
    )


@lru_cache(maxsize=8)
def _list_adapter(ontology_path: str) -> TypeAdapter:
    return TypeAdapter(list[_models(ontology_path)[1]])  # type: ignore[misc]


def validate_rows(json_frame: pl.DataFrame, ontology: Ontology, batch: int = 5_000) -> int:
    """Validate every row against the model (pydantic's Rust core, from JSON); raise on violations.

    Slices of ``batch`` rows keep memory flat; the cyclic GC is paused meanwhile because
    the validated objects are dropped at once and scanning them dominates otherwise.
    """
    adapter = _list_adapter(ontology.source)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, json_frame.height, batch):
            payload = json_frame.slice(start, batch).write_ndjson().strip().replace("\n", ",")
            try:
                adapter.validate_json("[" + payload + "]")
            except ValidationError as e:
                first = "; ".join(
                    f"row {start + err['loc'][0]} {'.'.join(map(str, err['loc'][1:]))}: {err['msg']}" for err in e.errors()[:3]
                )
                raise SchemaViolation(f"{e.error_count()} schema violations, first: {first}") from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return json_frame.height


class SchemaViolation(ValueError):
    """Rows that do not match the output model."""


PYDANTIC_SAMPLE = 1_000  # rows of every partition also checked through the pydantic model itself


def _field_violation(spec: FieldSpec) -> pl.Expr:
    """The first thing wrong with one attribute struct of an ``ok`` row (null when nothing is), as the model would see it."""
    v = pl.col(spec.key).struct
    value = v.field("value")
    if spec.cardinality == "single":
        allowed = value.is_in([*spec.values, UNKNOWN]) if spec.values is not None else pl.lit(True)
        bad_value = value.is_null() | ~allowed
    else:
        inside = (
            value.list.eval(pl.element().is_not_null() & pl.element().is_in(list(spec.values))).list.all() if spec.values else pl.lit(True)
        )
        bad_value = value.is_null() | value.list.eval(pl.element().is_null()).list.any() | ~inside
    conf = v.field("confidence").cast(pl.Float64)
    bad_conf = conf.is_null() | conf.is_nan() | (conf < 0) | (conf > 1)
    evidence = v.field("evidence")
    bad_evidence = evidence.is_null() | evidence.list.eval(pl.element().is_null()).list.any()
    bad_source = v.field("source").is_not_null() & ~v.field("source").is_in(list(SOURCES))
    missing = pl.col(spec.key).is_null()
    return (
        pl.when(missing & pl.lit(spec.required))
        .then(pl.lit(f"{spec.name}: missing"))
        .when(missing)
        .then(None)
        .when(bad_value)
        .then(pl.lit(f"{spec.name}.value: not one of the field's values"))
        .when(bad_conf)
        .then(pl.lit(f"{spec.name}.confidence: not a number in [0, 1]"))
        .when(bad_evidence)
        .then(pl.lit(f"{spec.name}.evidence: not a list of strings"))
        .when(bad_source)
        .then(pl.lit(f"{spec.name}.source: not one of {', '.join(SOURCES)}"))
    )


def columnar_violations(mart: pl.DataFrame, ontology: Ontology) -> pl.DataFrame:
    """``row, reason`` of every row of the final table that breaks the output model, checked as polars expressions.

    The same rules as the pydantic model (which stays the contract, and the JSON Schema's
    source), vectorised: status, the attributes-iff-ok rule, a reason for rejects, the
    subject count, and for every field of an ok row its value set, confidence range,
    evidence and source. A test holds the two to agreement: a row this accepts, pydantic accepts.
    """
    ok = pl.col("status") == "ok"
    any_attr = pl.any_horizontal(pl.col(f.key).is_not_null() for f in ontology.fields)
    image = pl.col("image").struct
    checks = [
        pl.when(pl.col("status").is_null() | ~pl.col("status").is_in(list(STATUSES))).then(
            pl.lit("status: not one of " + ", ".join(STATUSES))
        ),
        pl.when(pl.col("source").is_null() | pl.col("partition").is_null()).then(pl.lit("source/partition: missing")),
        pl.when((pl.col("status") == "rejected") & (pl.col("reason").is_null() | (pl.col("reason") == ""))).then(
            pl.lit("a rejected record needs a reason")
        ),
        pl.when(~ok & any_attr).then(pl.lit("attributes on a record that is not ok")),
        pl.when(pl.col("subject_count") < 0).then(pl.lit("subject_count: negative")),
        pl.when(pl.col("flags").is_null() | pl.col("flags").list.eval(pl.element().is_null()).list.any()).then(
            pl.lit("flags: not a list of strings")
        ),
        pl.when(pl.col("characters").is_null() | pl.col("characters").list.eval(pl.element().is_null()).list.any()).then(
            pl.lit("characters: not a list of strings")
        ),
        pl.when(
            pl.col("image").is_not_null()
            & ((image.field("width") < 1) | (image.field("height") < 1) | (image.field("frames") < 1) | (image.field("faces") < 0))
        ).then(pl.lit("image: sizes, frames or faces out of range")),
        *[pl.when(ok).then(_field_violation(f)) for f in ontology.fields],
    ]
    found = mart.with_row_index("row").select("row", pl.coalesce(checks).alias("reason"))
    return found.filter(pl.col("reason").is_not_null())


def pydantic_sample(mart: pl.DataFrame, ontology: Ontology, n: int = PYDANTIC_SAMPLE) -> pl.DataFrame:
    """Rows to check through the pydantic model too: an even sample, plus the first row of every status and of
    every distinct (field, value, source) combination."""
    if mart.height <= n:
        return mart
    idx = mart.with_row_index("_row")
    rows = set(range(0, mart.height, max(1, mart.height // n)))
    rows |= set(idx.group_by("status").agg(pl.col("_row").min()).get_column("_row").to_list())
    ok = idx.filter(pl.col("status") == "ok")
    for f in ontology.fields:
        v = pl.col(f.key).struct
        # open-ended fields (any tag name is a value) are covered by their source; list fields value by value
        value = pl.lit(None, dtype=pl.String) if f.values is None else v.field("value")
        pairs = ok.select("_row", value.alias("_v"), v.field("source").alias("_s"))
        if f.cardinality == "multi" and f.values is not None:
            pairs = pairs.explode("_v")
        rows |= set(pairs.group_by("_v", "_s").agg(pl.col("_row").min()).get_column("_row").to_list())
    return mart[sorted(rows)]


def validate_table(mart: pl.DataFrame, ontology: Ontology) -> int:
    """Validate the final table before it is written: every row as columns, a sample and every distinct value through pydantic."""
    bad = columnar_violations(mart, ontology)
    if bad.height:
        first = "; ".join(f"row {r}: {why}" for r, why in bad.head(3).iter_rows())
        raise SchemaViolation(f"{bad.height} schema violations, first: {first}")
    validate_rows(to_json_frame(pydantic_sample(mart, ontology), ontology), ontology)
    return mart.height
