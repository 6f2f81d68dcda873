"""Architecture invariants: definitions load, domain has no Dagster, committed data is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from charassets.definitions import build_definitions
from charassets.domain.demo import embedded_vocabulary_rows, generate
from charassets.domain.ontology import Ontology
from charassets.domain.schema import json_schema
from charassets.domain.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]


def test_the_asset_graph_is_the_table_registry():
    """Every registered table is an asset in its stage's group, with exactly the deps the registry says it reads."""
    defs = build_definitions({"CHARASSETS_HOME": "/nonexistent-home"})
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}
    assert set(assets) == set(TABLES)
    for path, node in assets.items():
        t = TABLES[path]
        assert node.group_name == t.stage
        assert {p.to_user_string() for p in node.parent_keys} == set(t.reads), path
        assert node.is_partitioned == t.partitioned, path
        assert node.description, f"{path} has no description"
        assert all(r in TABLES for r in t.reads)


def test_domain_imports_no_dagster():
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "charassets" / "domain").rglob("*.py")
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "assert not any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules), 'dagster imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_import_contracts_hold():
    """The architecture contracts in pyproject.toml ([tool.importlinter]): domain without Dagster, tags apart, no cycles."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_maintenance_covers_every_delta_table():
    from charassets.defs.maintenance import TABLES as MAINTAINED

    graph = build_definitions().resolve_asset_graph()
    delta = {tuple(k.path) for k in graph.get_all_asset_keys() if "delta" in graph.get(k).kinds}
    assert delta == {t.key for t in TABLES.values() if t.storage == "delta"}
    assert delta == set(MAINTAINED)


def test_a_read_of_an_undeclared_table_fails(tmp_path):
    from charassets.domain.lake import Lake
    from charassets.domain.tables import DeclaredLake, UndeclaredTable, table

    labels = DeclaredLake.for_tables(Lake(str(tmp_path)), [table("labels/tag_attributes")])
    assert labels.exists("clean", "tags") is False  # declared: allowed (and absent)
    with pytest.raises(UndeclaredTable, match="reads raw/records"):
        labels.read("raw", "records")
    with pytest.raises(UndeclaredTable, match="does not own"):
        labels.write_table("clean", "tags", pl.DataFrame({"x": [1]}))


def test_embedded_vocabulary_is_current():
    committed = pl.read_csv(ROOT / "charassets" / "data" / "vocabulary.csv", has_header=False, infer_schema=False).fill_null("")
    expected = [(t, str(c), str(n), a) for t, c, n, a in embedded_vocabulary_rows()]
    assert committed.rows() == expected, "run `make vocab`"


def test_json_schema_has_exactly_the_mission_keys():
    schema = json_schema(Ontology.load())
    attrs = schema["$defs"]["CharacterAttributes"]
    assert attrs["required"] == ["Age", "Gender", "Ethnicity", "Hair Style", "Hair Color", "Hair Length", "Eye Color", "Body Type", "Dress"]
    assert set(attrs["properties"]) - set(attrs["required"]) == {"Expression", "Accessories", "Scars", "Tattoos"}
    assert schema["properties"]["status"]["enum"] == ["ok", "ambiguous", "no_character", "rejected"]


def test_demo_generation_is_deterministic(tmp_path):
    a, b = generate(tmp_path / "a", n=500, rows_per_partition=100), generate(tmp_path / "b", n=500, rows_per_partition=100)
    for rel in ("ordered/part-00000.parquet", "danbooru/posts-00000.jsonl"):
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes()


def test_workspace_and_pyproject_name_the_same_code_location():
    """`dagster dev` and `dagster job backfill -w workspace.yaml` must agree, or queued runs cannot launch."""
    import tomllib

    import yaml

    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    assert workspace["location_name"] == tool["code_location_name"]
    assert workspace["module_name"] == tool["module_name"]


def test_dagster_instance_writes_only_under_dagster_home():
    """Every storage path of the instance is DAGSTER_HOME itself, never a path relative to the working directory."""
    import yaml

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    dirs = [config["storage"]["sqlite"]["base_dir"], config["local_artifact_storage"]["config"]["base_dir"]]
    assert dirs == [{"env": "DAGSTER_HOME"}] * 2 and "compute_logs" not in config  # compute logs: the default, under storage/
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {"storage/", "history/", "schedules/", "logs/"} <= set(ignored)  # DAGSTER_HOME = the project root in the Makefile


def test_one_parser_reads_every_model_spec_string():
    """Text embedders, image backends and image embedders are all named ``kind[:target]`` and parsed by ``specs.parse_spec``."""
    from charassets.domain.images.backends import parse_backend
    from charassets.domain.images.embedders import load_image_embedder
    from charassets.domain.models.embedders import make_embedder
    from charassets.domain.specs import ModelSpec

    assert make_embedder("hashing:64").dim == 64 and make_embedder("hashing").dim == 256
    assert parse_backend("wd:SmilingWolf/wd-vit-tagger-v3") == ModelSpec("wd", "SmilingWolf/wd-vit-tagger-v3")
    assert type(load_image_embedder("colorlayout")).__name__ == "ColorLayoutEmbedder"
    for bad, load in (("hashing:", make_embedder), ("minilm:x", make_embedder), ("hf", make_embedder), ("clip", load_image_embedder)):
        with pytest.raises(ValueError, match="unknown"):
            load(bad)
    with pytest.raises(ValueError, match="unknown image backend"):
        parse_backend("animeface:x")


def test_a_failed_warning_check_is_reported_with_its_own_reason():
    """The runner lists failed checks generically: a warning says so, and every check gives its own description."""
    import dagster as dg

    from charassets.runner import failed_checks

    @dg.asset(
        check_specs=[dg.AssetCheckSpec("warns", asset="a"), dg.AssetCheckSpec("fails", asset="a"), dg.AssetCheckSpec("ok", asset="a")]
    )
    def a():
        yield dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(check_name="warns", passed=False, severity=dg.AssetCheckSeverity.WARN, description="too unknown"),
                dg.AssetCheckResult(check_name="fails", passed=False),
                dg.AssetCheckResult(check_name="ok", passed=True),
            ]
        )

    assert sorted(failed_checks(dg.materialize([a]))) == ["a:fails", "a:warns (warning: too unknown)"]
