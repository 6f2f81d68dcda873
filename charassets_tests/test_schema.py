"""The final table's contract: the columnar check agrees with the pydantic model it stands in for."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from charassets.domain.schema import _list_adapter, columnar_violations, pydantic_sample, to_json_frame, validate_table

TAGS = [
    "1girl, solo, long hair, blue eyes, twintails, school uniform, smile",
    "1boy, solo, short hair, red eyes, scar, armor",
    "2girls, multiple girls, long hair",
    "no humans, scenery",
]  # ok, ok, ambiguous, no_character; plus one rejected row


@pytest.fixture(scope="module")
def mart(ontology, embedded_vocabulary):
    from charassets.domain.pipeline import clean_stage, label_stage, mart_stage
    from charassets.domain.sources import RAW_SCHEMA, REJECT_SCHEMA, SourceSpec

    raw = pl.DataFrame(
        [
            {"record_id": f"t:{i}", "source_id": str(i), "source": "t", "partition": "p", "file": "-", "row_index": i, "tags_raw": t}
            for i, t in enumerate(TAGS)
        ],
        schema=RAW_SCHEMA,
    )
    clean, _ = clean_stage(raw, SourceSpec(name="t", uri="-"), embedded_vocabulary)
    rejects = pl.DataFrame(
        [
            {
                "record_id": None,
                "source_id": None,
                "source": "t",
                "partition": "p",
                "file": "-",
                "row_index": 9,
                "reason": "no tags",
                "raw_excerpt": "",
            }
        ],
        schema=REJECT_SCHEMA,
    )
    return mart_stage(label_stage(clean, ontology), rejects, ontology)


def _pydantic_ok(frame: pl.DataFrame, ontology) -> list[bool]:
    adapter = _list_adapter(ontology.source)
    out = []
    for row in to_json_frame(frame, ontology).iter_rows(named=True):
        try:
            adapter.validate_python([row])
            out.append(True)
        except ValidationError:
            out.append(False)
    return out


MUTATIONS = st.sampled_from(
    [
        ("status", "pending"),
        ("status", None),
        ("reason", None),
        ("subject_count", -1),
        ("value", "purple-ish"),
        ("value", None),
        ("confidence", 1.5),
        ("confidence", -0.1),
        ("confidence", math.nan),
        ("confidence", None),
        ("source", "guess"),
        ("source", None),
        ("evidence", None),
        ("drop_attribute", None),
        ("flags", None),
    ]
)


def _mutate(mart: pl.DataFrame, row: int, field: str, what: str, to) -> pl.DataFrame:
    rows = mart.to_dicts()
    r = rows[row]
    if what in ("status", "reason", "subject_count", "flags"):
        r[what] = to
    elif what == "drop_attribute":
        r[field] = None
    elif r.get(field) is not None:
        value = dict(r[field])
        if what == "value" and isinstance(value["value"], list):
            value["value"] = [to] if to is not None else None
        else:
            value[what] = to
        r[field] = value
    return pl.DataFrame(rows, schema=mart.schema)


def test_the_demo_rows_pass_both_checks(mart, ontology):
    assert columnar_violations(mart, ontology).height == 0 and all(_pydantic_ok(mart, ontology))
    assert validate_table(mart, ontology) == mart.height


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 4), field=st.sampled_from(["age", "hair_color", "hair_style", "dress", "tattoos"]), mutation=MUTATIONS)
def test_columnar_check_agrees_with_pydantic(mart, ontology, row, field, mutation):
    mutated = _mutate(mart, row, field, *mutation)
    columnar_bad = set(columnar_violations(mutated, ontology).get_column("row").to_list())
    pydantic_ok = _pydantic_ok(mutated, ontology)
    for i, ok in enumerate(pydantic_ok):
        assert (i not in columnar_bad) == ok, (i, mutation, field, columnar_violations(mutated, ontology).to_dicts())


def test_the_pydantic_sample_covers_every_status_and_value(mart, ontology):
    big = pl.concat([mart] * 2000)  # 10,000 rows
    sample = pydantic_sample(big, ontology)
    assert sample.height <= 1_100 and set(sample.get_column("status")) == set(mart.get_column("status"))
    for f in ("hair_color", "hair_length", "eye_color"):  # every distinct value of the table is in the sample
        assert set(sample.select(pl.col(f).struct.field("value")).to_series().drop_nulls()) == set(
            big.select(pl.col(f).struct.field("value")).to_series().drop_nulls()
        )
