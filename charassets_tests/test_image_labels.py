"""The image path on the hand-labelled dev pictures: acceptance figures, one path, calibration (cross-validated)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charassets.domain.images import calibration, labels
from charassets.domain.images.signals import image_record
from charassets_tests.conftest import shared_file


@pytest.fixture(scope="module")
def dev():
    folder = shared_file("images_dev/labels.csv").parent
    return folder, labels.read_labels()


@pytest.fixture(scope="module")
def image_records(dev, ontology):
    """What `extract --image` gives for each dev picture (the same function)."""
    folder, lab = dev
    return [image_record((folder / f).read_bytes(), f, ontology) for f in sorted(lab)]


def test_labels_cover_the_dev_pictures(dev):
    folder, lab = dev
    assert len(lab) == 69 and all((folder / f).exists() for f in lab)
    assert sum(r["characters"] > 1 for r in lab.values()) == 3


def test_acceptance_figures_of_extract_image(dev, image_records):
    figures = labels.score(image_records, dev[1])
    print(labels.format_score(figures))
    hair, eye, several = figures["fields"]["hair_color"], figures["fields"]["eye_color"], figures["several"]
    assert hair["accuracy"] >= 0.8 and hair["coverage"] >= 0.8
    assert eye["accuracy"] >= 0.6 and eye["coverage"] >= 0.5
    assert several["multi_flagged"] == several["multi"] and several["singles_flagged"] <= 0.05 * several["singles"]
    for field in (hair, eye):  # shown values: the final threshold holds, confidences are calibrated where bins are large
        assert all(b["mean_confidence"] >= calibration.IMAGE_MIN_CONFIDENCE - 1e-9 for b in field["reliability"])
        assert all(abs(b["mean_confidence"] - b["accuracy"]) <= 0.1 for b in field["reliability"] if b["n"] >= 10)


def test_the_stored_calibration_is_the_fit_and_holds_out_of_fold(dev):
    folder, lab = dev
    samples = labels.calibration_samples(folder, lab)
    for key, (x, y) in samples.items():
        assert np.allclose(calibration.fit(x, y), calibration.COEFFICIENTS[key], atol=2e-3), key  # refit = stored
        p = calibration.cross_validated(x, y)
        for b in calibration.reliability(p, y):  # out of fold, not training, figures
            if b["n"] >= 10:
                assert abs(b["mean_confidence"] - b["accuracy"]) <= 0.1, (key, b)
    x, y = samples["hair_color"]
    assert calibration.threshold_from(x, y) == calibration.IMAGE_MIN_CONFIDENCE  # the threshold comes from the fit
    p = np.mean([calibration.cross_validated(x, y, seed=s) for s in range(5)], axis=0)
    shown = p >= calibration.IMAGE_MIN_CONFIDENCE
    assert y[shown].mean() >= 0.8 and shown.mean() >= 0.8  # out of fold: right and covered on hair colour


def test_extract_image_and_the_graph_give_the_same_records(dev, image_records, tmp_path):
    """ONE PATH: the dev pictures through `extract --input DIR` (the Dagster graph) and through `extract --image`."""
    from charassets.cli import extract_file

    folder, lab = dev
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for f in lab:
        (pictures / f).write_bytes((folder / f).read_bytes())  # a copy: a link out of the source root is refused
    graph = {json.loads(line)["id"]: json.loads(line) for line in extract_file(pictures)}
    for mine in image_records:
        theirs = graph[mine["id"]]
        assert theirs["status"] == mine["status"], mine["id"]
        assert theirs["subject_count"] == mine["subject_count"], mine["id"]
        assert theirs["flags"] == mine["flags"], mine["id"]
        assert theirs["attributes"] == mine["attributes"], mine["id"]
        assert theirs["image"]["face_boxes"] == mine["image"]["face_boxes"], mine["id"]


DEMO_READINGS = {  # what charassets/data/demo_images/SOURCE.md promises for each shipped picture
    "1cb2a05cbf82a7ad.webp": ("ok", "blue"),
    "07996a3154c08ef7.webp": ("ok", "grey"),
    "2d7aab3af701b805.webp": ("ok", "black"),
    "35d93e2105fc0112.webp": ("ok", "brown"),
    "39b66bf6acefadf5.webp": ("ok", "green"),
    "e5c9ab77719dad02.webp": ("ok", "purple"),
    "0934b708e5f10c41.webp": ("ambiguous", None),
    "aaa3b0ae8dff269d.webp": ("ok", "black"),
}


def test_the_shipped_demo_pictures_read_as_their_note_says(ontology, tmp_path):
    from charassets.domain.images.samples import SOURCE_NAME, add_demo_images, demo_image_files

    files = demo_image_files()
    assert {f.name for f in files} == set(DEMO_READINGS) and (files[0].parent / "SOURCE.md").exists()
    for f in files:
        record = image_record(f.read_bytes(), f.name, ontology)
        status, hair = DEMO_READINGS[f.name]
        assert record["status"] == status and record["image"]["width"] == 256, (f.name, record["flags"])
        if hair:
            assert record["attributes"]["Hair Color"]["value"] == hair, (f.name, record["attributes"]["Hair Color"])
        else:
            assert "image_shows_several" in record["flags"]
    config = add_demo_images(tmp_path, {"sources": [{"name": "demo_ordered", "uri": "ordered/*.parquet"}]})
    assert [s["name"] for s in config["sources"]] == ["demo_ordered", SOURCE_NAME]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(DEMO_READINGS)
    assert add_demo_images(tmp_path, config) == config  # added once
