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

from charassets.domain.images.decode import ImageRejected, confine, decode_image
from charassets.domain.images.signals import AnimeFaceBackend, Face, Palette, image_signals
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


class _FixedFaces:
    name = "fixed"

    def __init__(self, faces):
        self._faces = faces

    def faces(self, image):
        return self._faces


def test_face_count_decides_the_status():
    face = Face((0, 0, 10, 10), 0.9, (250, 230, 150), (50, 100, 200), (250, 220, 200))
    one = image_signals(RED, _FixedFaces([face]))
    assert one.status == "ok" and one.attributes["hair_color"]["value"] == "blonde"
    assert one.attributes["eye_color"]["value"] == "blue" and 0 < one.attributes["hair_color"]["confidence"] <= 0.9
    two = image_signals(RED, _FixedFaces([face, face]))
    assert two.status == "ambiguous" and two.flags == ["faces:2"] and two.subject == "multiple"
    none = image_signals(RED, _FixedFaces([]))
    assert none.status == "ambiguous" and none.flags == ["no_face_detected"]
    assert all(a["value"] == "unknown" for a in none.attributes.values())


def test_palette_names_are_ontology_values(ontology):
    palette = Palette.load()
    for key, (labels, _) in palette.fields.items():
        assert {n for n in labels if not n.startswith("_")} <= set(ontology.field(key).values), key


def test_skin_tone_is_reported_only_when_notable():
    """Ordinary anime skin (lit or shaded) says nothing; tan, dark and coloured skin are named (visible tone only)."""
    palette = Palette.load()

    def tone(rgb):
        face = Face((0, 0, 10, 10), 0.9, (20, 20, 25), (50, 100, 200), rgb)
        return image_signals(RED, _FixedFaces([face]), palette).attributes["ethnicity"]

    for ordinary in [(247, 215, 205), (240, 205, 195), (195, 160, 150), (173, 143, 137)]:
        assert tone(ordinary)["value"] == "unknown", ordinary
    assert tone((205, 145, 100))["value"] == "tan skin"
    assert tone((95, 62, 45))["value"] == "dark skin"
    assert tone((125, 165, 225))["value"] == "colored skin"
    assert tone((95, 62, 45))["evidence"][0] == "fixed:skin=#5f3e2d"


def test_dev_images_show_no_notable_skin_tone():
    """None of the dev characters is drawn tan, dark or coloured: a skin tone named on one of them is a false reading."""
    root, rows = _dev_images()
    named = {}
    for row in rows:
        s = image_signals(decode_image((root / row["file"]).read_bytes()).image)
        if s.status == "ok" and s.attributes["ethnicity"]["value"] not in ("unknown", "pale skin"):
            named[row["file"]] = s.attributes["ethnicity"]
    print(f"notable skin tone named on {len(named)} dev images: {named}")
    assert len(named) <= 1, named


def _dev_images():
    labels = shared_file("images_dev/labels.csv")
    return labels.parent, list(csv.DictReader(labels.open()))


def test_hair_colour_of_dev_images_matches_the_label():
    """Every hair-colour image (the label tag run through the text path gives the expected value) with one face."""
    root, rows = _dev_images()
    backend = AnimeFaceBackend()
    checked, wrong = 0, []
    for row in rows:
        expected = extract_one(f"1girl, solo, {row['tag']}")["attributes"]["Hair Color"]
        if expected["source"] != "tags" or expected["value"] in ("unknown", "multicolored"):
            continue  # not a single named hair colour
        signals = image_signals(decode_image((root / row["file"]).read_bytes()).image, backend)
        if signals.status != "ok":
            continue
        checked += 1
        got = signals.attributes["hair_color"]["value"]
        if got != expected["value"]:
            wrong.append((row["tag"], expected["value"], got, signals.attributes["hair_color"]["evidence"]))
    print(f"hair colour: {checked - len(wrong)}/{checked} single-face images match")
    assert checked >= 5 and not wrong, wrong


def test_multi_character_dev_images_are_flagged():
    root, rows = _dev_images()
    flagged, signals = {}, {}
    for row in rows:
        s = signals[row["file"]] = image_signals(decode_image((root / row["file"]).read_bytes()).image)
        if s.status == "ambiguous" and s.flags[0].startswith("faces:"):
            flagged[row["file"]] = s.flags[0]
    print(f"flagged as several characters: {flagged}")
    assert set(flagged) == MULTI_VIEW, flagged
    for f in SINGLE_WITH_SPURIOUS_DETECTIONS:
        assert signals[f].status == "ok" and signals[f].flags[0].startswith("small_faces_ignored"), (f, signals[f].flags)


# the dev images that show two characters (or two views of one), checked by eye; the
# single-character images where small spurious detections appear must not be flagged
MULTI_VIEW = {"0934b708e5f10c41.webp", "4d32cd232890e772.webp"}
SINGLE_WITH_SPURIOUS_DETECTIONS = {"56f16d7c4cc515c2.webp", "5e4d4d099e5bff5b.webp"}


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
    blue = tagger_signals(Image.new("RGB", (50, 80), (20, 40, 220)), tagger, ontology)
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

    from charassets.domain.images.backends.clip import PROMPTS, ClipImageModel
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
    assert len(answers) == 2 and set(answers[0]) == {k for k in PROMPTS if ontology.field(k).cardinality == "single"}
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


def test_tags_and_image_reconcile_with_disagreements_flagged():
    from charassets.domain.images.signals import ImageSignals, reconcile

    def attr(value, confidence, source):
        return {"value": value, "confidence": confidence, "evidence": [], "source": source}

    tags = {"hair_color": attr("blue", 0.9, "tags"), "eye_color": attr("unknown", 0.0, None), "hair_length": attr("unknown", 0.0, None)}
    image = ImageSignals(
        "animeface",
        [],
        "ok",
        [],
        {"hair_color": attr("red", 0.8, "image"), "eye_color": attr("green", 0.7, "image"), "hair_length": attr("long", 0.2, "image")},
    )
    merged, flags = reconcile(tags, image)
    assert merged["hair_color"]["value"] == "blue" and flags == ["image_disagrees:hair_color=red"]  # tags win, disagreement kept
    assert merged["eye_color"] == attr("green", 0.7, "image")  # a confident image value fills the gap
    assert merged["hair_length"]["value"] == "unknown"  # an unsure one does not
    several = ImageSignals("animeface", [], "ambiguous", ["faces:2"], {})
    assert reconcile(tags, several)[1] == ["image_shows_several"]


def test_dev_images_agree_with_their_own_label_tags():
    from charassets.domain.images.signals import reconcile

    root, rows = _dev_images()
    checked, disagreements = 0, []
    for row in rows:
        record = extract_one(f"1girl, solo, {row['tag']}")
        if record["attributes"]["Hair Color"]["source"] != "tags":
            continue
        signals = image_signals(decode_image((root / row["file"]).read_bytes()).image)
        tags = {"hair_color": record["attributes"]["Hair Color"]}
        _, flags = reconcile(tags, signals)
        checked += signals.status == "ok"
        disagreements += [(row["tag"], f) for f in flags if f.startswith("image_disagrees")]
    assert checked >= 5 and not disagreements, disagreements


def test_animeface_readings_depend_on_the_image_alone():
    root, rows = _dev_images()
    image = decode_image((root / rows[0]["file"]).read_bytes()).image
    backend = AnimeFaceBackend()
    first = backend.faces(image)
    backend.faces(Image.new("RGB", (64, 64), (255, 255, 255)))  # another image in between
    assert first and backend.faces(image) == first
