"""Image decoding on every kind of bad file (made here), and image signals on ../shared/data/images_dev."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from charassets.domain.images import calibration
from charassets.domain.images.backends.animeface import AnimeFaceBackend
from charassets.domain.images.colours import Palette, to_lab
from charassets.domain.images.decode import ImageRejected, confine, decode_image
from charassets.domain.images.signals import image_signals
from charassets.domain.pipeline import extract_one
from charassets_tests.conftest import shared_file


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixel data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


RED = Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n", "not an image"),
        (_encode(RED, "JPEG")[:300], "corrupt or truncated"),
        (_encode(RED, "PNG")[:60] + b"\x00" * 200, "corrupt or truncated"),
        (_png_header_only(100_000, 100_000), "decompression bomb"),
    ],
    ids=["zero-byte", "non-image", "truncated-jpeg", "corrupt-png", "bomb-header"],
)
def test_bad_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode_image(data)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageRejected, match="decompression bomb guard"):
        decode_image(_encode(RED, "PNG"), max_pixels=1000)


def test_every_mode_becomes_rgb():
    cmyk = decode_image(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.mode == "CMYK" and cmyk.image.mode == "RGB" and cmyk.image.getpixel((4, 4))[0] > 200  # red stays red

    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    transparent = decode_image(_encode(p, "PNG", transparency=0))
    assert transparent.image.getpixel((0, 0)) == (255, 255, 255)  # transparent index over white

    la = decode_image(_encode(Image.new("LA", (8, 8), (0, 0)), "PNG"))
    assert la.image.getpixel((0, 0)) == (255, 255, 255)  # fully transparent black over white

    ramp = Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), mode="I;16")
    sixteen = decode_image(_encode(ramp, "PNG"))
    assert sixteen.image.mode == "RGB" and sixteen.image.getpixel((0, 0)) == (0, 0, 0)
    assert sixteen.image.getpixel((7, 7)) == (255, 255, 255)  # the full 16-bit range maps to 8 bits


def test_animated_image_uses_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    d = decode_image(buf.getvalue())
    assert d.animated and d.frames == 3 and d.image.getpixel((8, 8))[0] > 200


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    d = decode_image(_encode(Image.new("RGB", (40, 20), (10, 10, 10)), "JPEG", exif=exif))
    assert (d.width, d.height) == (20, 40)


def test_hashes_and_thumbnail():
    a = decode_image(_encode(Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 64).convert("RGB"), "PNG"))
    b = decode_image(_encode(a.image.resize((200, 200)), "JPEG", quality=85))
    assert a.sha256 != b.sha256 and len(a.phash) == 16
    assert bin(int(a.phash, 16) ^ int(b.phash, 16)).count("1") <= 6  # near-duplicates hash alike
    thumb = Image.open(io.BytesIO(a.thumbnail(64)))
    assert thumb.format == "WEBP" and max(thumb.size) == 64


def test_paths_are_confined_to_the_source_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(b"x")
    (root / "escape.png").symlink_to(tmp_path / "elsewhere.png")
    assert confine(root, "ok.png") == (root / "ok.png").resolve()
    for bad in ("../secret.png", "/etc/passwd", "escape.png"):
        with pytest.raises(ImageRejected, match="escapes the source root"):
            confine(root, bad)


def _dev(name: str) -> Image.Image:
    return decode_image(shared_file(f"images_dev/{name}").read_bytes()).image


def test_face_count_decides_the_status():
    one = image_signals(_dev("1cb2a05cbf82a7ad.webp"))
    assert one.status == "ok" and len(one.faces) == 1 and one.subject == "single"
    assert one.attributes["hair_color"]["value"] == "blue" and one.attributes["hair_color"]["source"] == "image"
    assert calibration.IMAGE_MIN_CONFIDENCE <= one.attributes["hair_color"]["confidence"] <= 1
    two = image_signals(_dev("0934b708e5f10c41.webp"))
    assert two.status == "ambiguous" and two.flags[:2] == ["faces:2", "image_shows_several"] and two.subject == "multiple"
    assert all(a["value"] == "unknown" for a in two.attributes.values())
    blank = image_signals(Image.new("RGB", (64, 48), (200, 30, 30)))  # no face, no skin: nobody to read
    assert blank.status == "ambiguous" and blank.flags[0] == "no_face_detected" and blank.subject == "none"
    assert all(a["value"] == "unknown" for a in blank.attributes.values())


def test_without_a_face_the_hair_is_read_where_skin_shows():
    """A back view: no face, but skin, so one character; the hair is read from the upper middle of the picture."""
    back = image_signals(_dev("aaa3b0ae8dff269d.webp"))
    assert back.status == "ok" and back.flags[0] == "no_face_detected" and not back.faces
    assert (
        back.attributes["hair_color"]["value"] in ("black", "blue") and "no_face:upper_middle" in back.attributes["hair_color"]["evidence"]
    )
    assert "eye_color" not in back.attributes  # no eyes without a face


def test_a_doubtful_reading_stays_unknown_and_is_flagged():
    """Below the calibrated threshold a colour is not shown: unknown, the reading kept in the evidence, flag low_evidence."""
    from charassets.domain.images.analysis import analyse

    weak = [(f, s) for f in ("4074d22f50a60009.webp", "5e4d4d099e5bff5b.webp", "a4b453b33d1f5974.webp") for s in [analyse(_dev(f))]]
    flagged = [(f, s) for f, s in weak if "low_evidence:hair_color" in s.flags]
    assert flagged, [(f, s.flags) for f, s in weak]
    for _, s in flagged:
        hair = s.attributes["hair_color"]
        assert hair["value"] == "unknown" and any(e.startswith("below_threshold=") for e in hair["evidence"])


def test_cielab_is_right_around_neutral():
    """Pillow's LAB bytes hold a and b as signed numbers: neutral grey is a = b = 0, not a wrap-around at ±128."""
    lab = to_lab(np.array([[128, 128, 128], [120, 100, 90], [90, 100, 120], [255, 0, 0]]))
    assert np.allclose(lab[0], [53.7, 0, 0], atol=0.5)
    assert lab[1, 1] > 0 and lab[1, 2] > 0 and lab[2, 2] < 0  # warm grey, cool grey: small a and b of the right sign
    assert 75 < lab[3, 1] < 85 and 60 < lab[3, 2] < 75  # red


def test_palette_names_are_ontology_values(ontology):
    palette = Palette.load()
    for key, (labels, _) in palette.fields.items():
        assert {n for n in labels if not n.startswith("_")} <= set(ontology.field(key).values), key
        assert palette.regions[key] in ("hair", "eyes", "skin")


def test_skin_tone_is_reported_only_when_notable():
    """Ordinary anime skin (lit or shaded) says nothing; tan, dark and coloured skin are named (visible tone only)."""
    palette = Palette.load()

    def tone(rgb):
        return palette.match("ethnicity", rgb).value

    for ordinary in [(247, 215, 205), (240, 205, 195), (195, 160, 150), (173, 143, 137)]:
        assert tone(ordinary) == "_ordinary", ordinary
    assert tone((205, 145, 100)) == "tan skin"
    assert tone((95, 62, 45)) == "dark skin"
    assert tone((125, 165, 225)) == "colored skin"


def test_dev_images_show_no_notable_skin_tone():
    """None of the dev characters is drawn tan, dark or coloured: a skin tone named on one of them is a false reading."""
    root, rows = _dev_images()
    named = {}
    for row in rows:
        s = image_signals(decode_image((root / row["file"]).read_bytes()).image)
        if s.status == "ok" and s.attributes.get("ethnicity", {}).get("value", "unknown") not in ("unknown", "pale skin"):
            named[row["file"]] = s.attributes["ethnicity"]
    print(f"notable skin tone named on {len(named)} dev images: {named}")
    assert len(named) <= 1, named


def _dev_images():
    labels = shared_file("images_dev/labels.csv")
    return labels.parent, list(csv.DictReader(labels.open()))


def test_extract_image_cli_prints_the_record_shape(tmp_path, ontology):
    from click.testing import CliRunner

    from charassets.cli import main
    from charassets.domain.schema import _models

    root, rows = _dev_images()
    face = next(r["file"] for r in rows if r["tag"] == "blue_hair")
    result = CliRunner().invoke(main, ["extract", "--image", str(root / face)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    tag_shape = extract_one("1girl, solo, blue_hair")
    assert set(out) == set(tag_shape) | {"image"} and out["status"] == "ok"
    _models(ontology.source)[0].model_validate(out["attributes"])  # the table's attribute model accepts it
    assert out["attributes"]["Hair Color"]["value"] == "blue" and out["attributes"]["Hair Color"]["source"] == "image"
    assert out["image"]["width"] == 512 and out["image"]["faces"] == 1 and len(out["image"]["face_boxes"]) == 1
    from charassets.domain.schema import ImageFacts

    ImageFacts.model_validate(out["image"])  # the same image object as the table's

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(_encode(RED, "JPEG")[:200])
    result = CliRunner().invoke(main, ["extract", "--image", str(bad)])
    assert result.exit_code == 1 and json.loads(result.output)["reason"].startswith("corrupt or truncated")


def _tiny_tagger(folder, size: int = 32):
    """A WD-layout ONNX tagger built here: mean BGR of the image -> sigmoid scores of six tags."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = ["general", "sensitive", "1girl", "solo", "blue_hair", "red_hair", "hatsune_miku"]
    categories = [9, 9, 0, 0, 0, 0, 4]
    # logits from mean (B, G, R) in 0..255: blue_hair ~ B - R, red_hair ~ R - B, 1girl/solo always, the character never
    w = np.zeros((3, len(names)), dtype=np.float32)
    w[0, 4], w[2, 4], w[0, 5], w[2, 5] = 0.05, -0.05, -0.05, 0.05
    b = np.array([2, -2, 5, 5, 0, 0, -10], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, len(names)])],
        [
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, folder / "model.onnx")
    rows = ["tag_id,name,category,count"] + [f"{i},{n},{c},100" for i, (n, c) in enumerate(zip(names, categories, strict=True))]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_wd_tagger_backend_maps_predicted_tags_to_the_ontology(tmp_path, ontology):
    from charassets.domain.images.backends.wd import WDTagger, tagger_signals

    tagger = WDTagger.load(str(_tiny_tagger(tmp_path)))  # a folder: the same loader a hub id goes through
    assert tagger.size == 32
    blue = tagger_signals(Image.new("RGB", (50, 80), (20, 40, 220)), tagger, ontology, lambda tags: extract_one(", ".join(tags), ontology))
    assert blue.status == "ok" and blue.attributes["hair_color"]["value"] == "blue"
    assert blue.attributes["hair_color"]["source"] == "image" and blue.attributes["hair_color"]["evidence"][0].startswith("wd:blue_hair=")
    assert blue.attributes["gender"]["value"] == "female"
    red = tagger.predict(Image.new("RGB", (80, 50), (230, 30, 20)))
    assert {t for t, _ in red.general} == {"1girl", "solo", "red_hair"} and not red.character
    assert [p for _, p in red.general] == sorted((p for _, p in red.general), reverse=True)  # most probable first
    assert set(red.rating) == {"general", "sensitive"}


def test_wd_label_file_format_of_the_real_tagger():
    from charassets.domain.images.backends.wd import CHARACTER, GENERAL, RATING, read_labels

    labels = read_labels(shared_file("vocab/wd_tagger_selected_tags.csv"))
    counts = dict(labels.group_by("category").len().iter_rows())
    assert labels.height == 10_861 and counts[RATING] == 4 and counts[GENERAL] > 8000 and counts[CHARACTER] > 2000


def test_extract_image_with_the_wd_backend_chosen_by_config(tmp_path):
    from click.testing import CliRunner

    from charassets.cli import main

    (tmp_path / "tagger").mkdir()
    folder = _tiny_tagger(tmp_path / "tagger")
    picture = tmp_path / "blue.png"
    Image.new("RGB", (64, 64), (20, 40, 220)).save(picture)
    result = CliRunner().invoke(main, ["extract", "--image", str(picture)], env={"CHARASSETS_IMAGE_BACKEND": f"wd:{folder}"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["status"] == "ok" and out["attributes"]["Hair Color"]["value"] == "blue" and out["image"]["backend"] == "wd"


def test_clip_backend_embeds_images_and_answers_zero_shot_prompts(tmp_path, ontology):
    """A tiny random CLIP saved here, loaded through the same from_pretrained path as a hub checkpoint."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from charassets.domain.images.backends.clip import ClipImageModel, prompts
    from charassets_tests.test_heads import _tiny_tokenizer

    _tiny_tokenizer(tmp_path).save_pretrained(tmp_path)
    tower = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 32, "max_position_embeddings": 32},
        vision_config={**tower, "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    clip = ClipImageModel(str(tmp_path))
    images = [Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (40, 60), (30, 30, 200))]
    vectors = clip.encode_images(images)
    assert vectors.shape == (2, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert np.allclose(clip.encode_images(images[:1]), vectors[:1], atol=1e-5)  # deterministic, batch-independent
    answers = clip.zero_shot(vectors, ontology)
    assert len(answers) == 2 and set(answers[0]) == set(prompts(ontology)) >= {"hair_color", "eye_color", "hair_length", "gender"}
    assert "ethnicity" not in answers[0]  # colors.yaml switches its zero-shot reading off
    for key, a in answers[0].items():
        assert a["value"] in ontology.field(key).values and 0 < a["confidence"] <= 1 and a["source"] == "image"
    # as a signals backend chosen by config: animeface counts, the prompts name the attributes
    from charassets.domain.images.signals import signals_for

    single = decode_image(shared_file("images_dev/237060063cc1c26b.webp").read_bytes()).image
    two = decode_image(shared_file("images_dev/0934b708e5f10c41.webp").read_bytes()).image
    s = signals_for(single, f"clip:{tmp_path}", ontology)
    assert s.backend == "clip" and s.status == "ok" and len(s.faces) == 1
    assert (
        s.attributes["gender"]["evidence"] == [f"{clip.id}:zero-shot"]
        and s.attributes["hair_color"]["value"] in ontology.field("hair_color").values
    )
    several = signals_for(two, f"clip:{tmp_path}", ontology)
    assert several.status == "ambiguous" and "faces:2" in several.flags


def test_near_duplicates_cluster_and_distinct_images_stay_apart():
    import polars as pl

    from charassets.domain.dedup import deduplicated, near_duplicate_clusters

    rng = np.random.default_rng(0)
    bases = [
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).resize((256, 256), Image.Resampling.BICUBIC) for _ in range(30)
    ]
    decoded, origin = [], []
    for i, im in enumerate(bases):
        decoded.append(decode_image(_encode(im, "PNG")))
        origin.append(i)
        if i < 10:  # near-duplicates: smaller, recompressed, slightly brighter
            variant = im.resize((180, 180)).point(lambda v: min(255, v + 6))
            decoded.append(decode_image(_encode(variant, "JPEG", quality=70)))
            origin.append(i)
    pairs = [(a, b) for a, b in zip(decoded, decoded[1:], strict=False) if a.width == 256 and b.width == 180]
    assert len(pairs) == 10 and any(a.phash != b.phash for a, b in pairs)  # the copies really hash differently
    clusters = near_duplicate_clusters([d.phash for d in decoded])
    by_origin = {}
    for o, c in zip(origin, clusters, strict=True):
        by_origin.setdefault(o, set()).add(int(c))
    assert all(len(cs) == 1 for cs in by_origin.values())  # every variant joined its original
    assert len({next(iter(cs)) for cs in by_origin.values()}) == 30  # and no two originals merged
    table = pl.DataFrame({"width": [d.width for d in decoded], "height": [d.height for d in decoded], "cluster_id": clusters})
    view = deduplicated(table)
    assert view.height == 30 and view.get_column("width").min() == 256  # the larger copy is kept


def test_embeddings_also_link_duplicates_the_hash_misses():
    from charassets.domain.dedup import near_duplicate_clusters

    hashes = ["0000000000000000", "ffffffffffffffff", "0f0f0f0f0f0f0f0f", "f0f0f0f0f0f0f0f0"]  # far apart as hashes
    vectors = np.array([[1, 0, 0], [0.999, 0.04, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    clusters = near_duplicate_clusters(hashes, vectors, min_cosine=0.99)
    assert clusters.tolist() == [0, 0, 2, 3]
    assert near_duplicate_clusters(hashes).tolist() == [0, 1, 2, 3]


def test_tags_and_image_go_through_the_graphs_resolver_with_disagreements_flagged():
    """``extract_one`` with a picture: the same ``decide`` as the graph (tags win, a confident reading fills, a differing one is flagged)."""
    from charassets.domain.images.calibration import IMAGE_MIN_CONFIDENCE
    from charassets.domain.images.signals import ImageSignals

    def attr(value, confidence):
        return {"value": value, "confidence": confidence, "evidence": ["animeface:x"], "source": "image"}

    sure, unsure = min(0.99, IMAGE_MIN_CONFIDENCE + 0.1), IMAGE_MIN_CONFIDENCE - 0.1
    image = ImageSignals(
        "animeface",
        [],
        "ok",
        [],
        {"hair_color": attr("red", sure), "eye_color": attr("green", sure), "hair_length": attr("long", unsure)},
    )
    record = extract_one("1girl, solo, blue hair", image=image)
    a = record["attributes"]
    assert a["Hair Color"]["value"] == "blue" and "image_disagrees:hair_color=red" in record["flags"]  # tags win, disagreement kept
    assert a["Eye Color"]["value"] == "green" and a["Eye Color"]["source"] == "image"  # a confident reading fills the gap
    assert a["Hair Length"]["value"] == "unknown"  # an unsure one does not
    several = ImageSignals("animeface", [], "ambiguous", ["faces:2"], {})
    assert "image_shows_several" in extract_one("1girl, solo, blue hair", image=several)["flags"]


def test_dev_images_agree_with_their_own_label_tags():
    """Where a picture's hint tag names a hair colour, the image disagrees only with a value the hand label also rejects."""
    from charassets.domain.images.labels import read_labels

    root, rows = _dev_images()
    hand = read_labels()
    checked, disagreements = 0, []
    for row in rows:
        if extract_one(f"1girl, solo, {row['tag']}")["attributes"]["Hair Color"]["source"] != "tags":
            continue
        signals = image_signals(decode_image((root / row["file"]).read_bytes()).image)
        flags = extract_one(f"1girl, solo, {row['tag']}", image=signals)["flags"]
        checked += signals.status == "ok"
        seen = [f.split("=", 1)[1] for f in flags if f.startswith("image_disagrees:hair_color")]
        disagreements += [(row["tag"], v) for v in seen if v not in hand[row["file"]]["hair_color"]]
    assert checked >= 5 and not disagreements, disagreements


def test_animeface_readings_depend_on_the_image_alone():
    root, rows = _dev_images()
    image = decode_image((root / rows[0]["file"]).read_bytes()).image
    backend = AnimeFaceBackend()
    first = backend.faces(image)
    backend.faces(Image.new("RGB", (64, 64), (255, 255, 255)))  # another image in between
    assert first and backend.faces(image) == first


def test_the_direct_detector_finds_what_the_wheels_detect_finds():
    """``nvxs.detect`` at the wheel's parameters gives ``animeface.detect``'s faces: same boxes, eyes and likelihoods."""
    import animeface

    from charassets.domain.images import nvxs

    root, rows = _dev_images()
    compared = 0
    for row in rows[:12]:
        small = decode_image((root / row["file"]).read_bytes()).image.resize((192, 192))
        wheel = [
            (
                round(f.likelihood, 4),
                tuple(vars(f.face.pos).values()),
                tuple(vars(f.left_eye.pos).values()),
                tuple(vars(f.right_eye.pos).values()),
            )
            for f in animeface.detect(small)
        ]
        direct = [(round(f.likelihood, 4), f.face, f.left_eye, f.right_eye) for f in nvxs.detect(np.asarray(small))]
        assert direct == wheel, row["file"]
        compared += len(wheel)
    assert compared >= 8  # faces were found and compared, not only empty lists


def test_the_direct_detector_takes_any_shape_and_refuses_what_would_hang_it():
    """Tiny, empty, strided and made-up pictures give the wheel's answer; parameters the C loop cannot take are refused."""
    import animeface

    from charassets.domain.images import nvxs

    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (1, 300), (300, 1), (56, 56), (57, 80), (120, 90)):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        wheel = [(round(f.likelihood, 4), tuple(vars(f.face.pos).values())) for f in animeface.detect(Image.fromarray(pixels))]
        assert [(round(f.likelihood, 4), f.face) for f in nvxs.detect(pixels)] == wheel
    assert nvxs.detect(np.zeros((0, 5, 3), np.uint8)) == []
    face = np.asarray(Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 64).convert("RGB"))
    assert nvxs.detect(face[::2, ::2]) == nvxs.detect(np.ascontiguousarray(face[::2, ::2]))  # a strided view is read as its pixels
    for bad in ({"scale_factor": 1.0}, {"step": 0.0}, {"min_window": 20.0}):
        with pytest.raises(ValueError):
            nvxs.detect(face, **bad)
    for wrong in (face.astype(np.float32), face[..., 0], np.dstack([face, face[..., :1]])):
        with pytest.raises(ValueError):
            nvxs.detect(wrong)


def test_image_modules_import_neither_the_pipeline_nor_the_models():
    """domain/images stands alone: a tag-reading backend is given its tag reader, never imports the record pipeline."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "charassets" / "domain" / "images").rglob("*.py"))
    banned = ("charassets.domain.pipeline", "charassets.domain.models")
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n == b or n.startswith(b + ".") for n in names for b in banned), (path.name, names)
    modules = [".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for p in files]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + f"assert not any(m in sys.modules for m in {banned!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert result.returncode == 0, result.stderr


def test_backend_specs_have_one_parser():
    from charassets.domain.images.backends import BACKENDS, BackendSpec, parse_backend

    assert parse_backend("animeface") == BackendSpec("animeface", "")
    assert parse_backend("wd:SmilingWolf/wd-vit-tagger-v3") == BackendSpec("wd", "SmilingWolf/wd-vit-tagger-v3")
    assert parse_backend("clip:/models/siglip") == BackendSpec("clip", "/models/siglip")
    assert set(BACKENDS) == {"animeface", "wd", "clip"}
    for bad in ("", "wd:", "wd", "clip", "animeface:x", "tagger:x"):
        with pytest.raises(ValueError, match="unknown image backend"):
            parse_backend(bad)
