"""The command line on good and malformed input, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
from click.testing import CliRunner

from charassets.cli import main


def test_extract_one_tag_string():
    result = CliRunner().invoke(main, ["extract", "--tags", "1girl, solo, Long Hair, (blue eyes:1.2), gray hair, white dress, smile"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "ok"
    attrs = out["attributes"]
    assert list(attrs)[:9] == ["Age", "Gender", "Ethnicity", "Hair Style", "Hair Color", "Hair Length", "Eye Color", "Body Type", "Dress"]
    assert (attrs["Hair Color"]["value"], attrs["Hair Length"]["value"], attrs["Eye Color"]["value"], attrs["Gender"]["value"]) == (
        "grey",
        "long",
        "blue",
        "female",
    )
    assert attrs["Hair Color"]["evidence"] == ["grey_hair"] and 0 < attrs["Hair Color"]["confidence"] <= 1


def test_extract_several_characters_and_empty_input():
    runner = CliRunner()
    multi = json.loads(runner.invoke(main, ["extract", "--tags", "2girls, multiple girls, long hair"]).stdout)
    assert multi["status"] == "ambiguous" and multi["attributes"] is None and multi["subject_count"] == 2
    empty = json.loads(runner.invoke(main, ["extract", "--tags", " , ,"]).stdout)
    assert empty["status"] == "rejected" and empty["reason"] == "no tags"


def test_extract_file_keeps_every_row_in_order(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "a", "tags": "1girl, solo, pink hair, short hair, green eyes"}),
        "{not json",
        json.dumps({"id": "c", "tags": "2girls, multiple girls"}),
        json.dumps({"id": "d", "tags": ""}),
        json.dumps({"id": "e", "tags": "no humans, scenery"}),
        json.dumps({"tags": "1boy"}),
    ]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["extract", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "rejected", "ambiguous", "rejected", "no_character", "rejected"]
    assert [r["id"] for r in rows] == ["a", None, "c", "d", "e", None]
    assert rows[0]["attributes"]["Hair Color"]["value"] == "pink"
    assert rows[1]["reason"].startswith("invalid JSON") and rows[3]["reason"] == "no tags" and rows[5]["reason"].startswith("missing id")


def test_extract_image_folder_through_the_graph(tmp_path, monkeypatch):
    import shutil

    from charassets_tests.conftest import shared_file

    monkeypatch.setenv("CHARASSETS_HOME", str(tmp_path / "home"))  # no project heads: tags and images only
    folder = tmp_path / "pictures"
    (folder / "more").mkdir(parents=True)
    shutil.copy(shared_file("images_dev/237060063cc1c26b.webp"), folder / "one.webp")  # one face
    shutil.copy(shared_file("images_dev/0934b708e5f10c41.webp"), folder / "more" / "two.webp")  # two characters
    (folder / "more" / "two.txt").write_text("2girls, multiple girls, twin braids")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = CliRunner().invoke(main, ["extract", "--input", str(folder)])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in (json.loads(x) for x in result.output.splitlines() if x.startswith("{"))}
    assert set(rows) == {"one.webp", "broken.png", "more/two.webp"}
    assert rows["one.webp"]["status"] == "ok" and "image_only" in rows["one.webp"]["flags"]
    assert rows["one.webp"]["attributes"]["Hair Color"]["source"] in ("image", None)
    assert rows["broken.png"]["status"] == "rejected" and rows["broken.png"]["reason"] == "image: not an image (unrecognised format)"
    assert rows["more/two.webp"]["status"] == "ambiguous" and "image_shows_several" in rows["more/two.webp"]["flags"]


def test_extract_csv_and_parquet_through_the_installed_command(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_text('id,tags\n1,"1girl, blonde hair, twintails"\n2,ragged,row,extra\n')
    out = subprocess.run(
        [sys.executable, "-m", "charassets.cli", "extract", "--input", str(csv)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "rejected"] and rows[0]["attributes"]["Hair Style"]["value"] == ["twintails"]
    pq = tmp_path / "in.parquet"
    pl.DataFrame({"id": [7], "tags": ["1boy, black hair, red eyes"]}).write_parquet(pq)
    out = subprocess.run(
        [sys.executable, "-m", "charassets.cli", "extract", "--input", str(pq)], capture_output=True, text=True, timeout=300
    )
    assert json.loads(out.stdout)["attributes"]["Eye Color"]["value"] == "red"


def test_usage_errors_are_clear(tmp_path):
    result = CliRunner().invoke(main, ["extract"])
    assert result.exit_code != 0 and "exactly one of --tags, --image or --input" in result.output


def test_extract_file_fills_from_profiles_of_the_input_and_of_the_lake(tmp_path, monkeypatch):
    # a lake that already knows hatsune_miku's eye colour (three records), none of which are in the file
    monkeypatch.setenv("CHARASSETS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHARASSETS_LAKE", str(tmp_path / "home" / "lake"))
    from charassets.domain.lake import Lake
    from charassets.domain.tags.profiles import PROFILE_SCHEMA

    Lake(str(tmp_path / "home" / "lake")).write_table(
        "marts",
        "character_profiles",
        pl.DataFrame([("hatsune_miku", "eye_color", "aqua", 3, 3, 1.0, 0.99, 0.5)], schema=PROFILE_SCHEMA, orient="row"),
    )
    src = tmp_path / "in.jsonl"
    rows = [{"id": str(i), "tags": "1girl, hatsune miku, aqua hair, twintails"} for i in range(3)] + [
        {"id": "x", "tags": "1girl, hatsune miku, smile"}
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["extract", "--input", str(src)])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["attributes"]["Hair Color"] == {
        "value": "aqua",
        "confidence": last["attributes"]["Hair Color"]["confidence"],
        "evidence": ["profile:hatsune_miku"],
        "source": "profile",
    }  # from the file itself
    assert last["attributes"]["Eye Color"]["value"] == "aqua" and last["attributes"]["Eye Color"]["source"] == "profile"  # from the lake
    assert not (tmp_path / "home" / "mlflow.db").exists()  # extracting never creates a model store
