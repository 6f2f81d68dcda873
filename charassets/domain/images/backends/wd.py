"""A WD-style tagger backend: image -> Danbooru tags with probabilities -> the same ontology as tag records.

Loads an ONNX export in the layout of SmilingWolf's wd-*-tagger-v3 models: one NHWC
float32 input (BGR, 0..255, square, padded with white), sigmoid outputs aligned with
``selected_tags.csv`` (``tag_id,name,category,count``; category 9 rating, 0 general,
4 character). ``WDTagger.load`` takes a folder holding both files or a Hugging Face hub
id (downloaded where the network is). The predicted tags then go through the text path
(cleaning, aliases, ontology), so an image gets exactly the attributes its tags would.
That path is not imported here: the backend is given a ``TagReader`` (tags -> record).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from charassets.domain.images.backends import TagReader
from charassets.domain.images.shapes import ImageSignals

RATING, GENERAL, CHARACTER = 9, 0, 4
MODEL_FILE, LABELS_FILE = "model.onnx", "selected_tags.csv"


def read_labels(path: str | Path) -> pl.DataFrame:
    """``selected_tags.csv``: one row per model output, in output order."""
    labels = pl.read_csv(path, schema_overrides={"name": pl.String, "category": pl.Int64})
    missing = {"name", "category"} - set(labels.columns)
    if missing:
        raise ValueError(f"{path}: not a tagger label file (missing {sorted(missing)})")
    return labels


@dataclass(frozen=True)
class TaggerOutput:
    rating: dict[str, float]
    general: list[tuple[str, float]]  # above the general threshold, most probable first
    character: list[tuple[str, float]]

    def tags(self) -> list[str]:
        return [t for t, _ in self.character] + [t for t, _ in self.general]


class WDTagger:
    name = "wd"

    def __init__(self, model_path: str | Path, labels_path: str | Path, general_threshold: float = 0.35, character_threshold: float = 0.85):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = inp.shape[1] if isinstance(inp.shape[1], int) else 448  # NHWC; dynamic: the v3 default
        labels = read_labels(labels_path)
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != labels.height:
            raise ValueError(f"model has {outputs} outputs, the label file {labels.height} rows")
        self.names = labels.get_column("name").to_list()
        self.categories = labels.get_column("category").to_numpy()
        self.general_threshold, self.character_threshold = general_threshold, character_threshold

    @classmethod
    def load(cls, spec: str, **kwargs) -> WDTagger:
        """A local folder with model.onnx and selected_tags.csv, or a hub id such as ``SmilingWolf/wd-vit-tagger-v3``."""
        folder = Path(spec)
        if folder.is_dir():
            return cls(folder / MODEL_FILE, folder / LABELS_FILE, **kwargs)
        from huggingface_hub import hf_hub_download

        return cls(hf_hub_download(spec, MODEL_FILE), hf_hub_download(spec, LABELS_FILE), **kwargs)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Pad to a white square, resize to the model's size, BGR float32 0..255, batch of one (NHWC)."""
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
        resized = canvas.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(resized, dtype=np.float32)[:, :, ::-1][None].copy()

    def predict(self, image: Image.Image) -> TaggerOutput:
        probs = self.session.run(None, {self.input_name: self.preprocess(image)})[0][0]

        def above(category: int, threshold: float) -> list[tuple[str, float]]:
            idx = np.flatnonzero((self.categories == category) & (probs >= threshold))
            return sorted(((self.names[i], round(float(probs[i]), 4)) for i in idx), key=lambda t: -t[1])

        rating = {self.names[i]: round(float(probs[i]), 4) for i in np.flatnonzero(self.categories == RATING)}
        return TaggerOutput(rating, above(GENERAL, self.general_threshold), above(CHARACTER, self.character_threshold))


@lru_cache(maxsize=4)
def cached_tagger(spec: str) -> WDTagger:
    """One loaded tagger per process and spec."""
    return WDTagger.load(spec)


def tagger_signals(image: Image.Image, tagger: WDTagger, ontology, tag_reader: TagReader) -> ImageSignals:
    """The tagger's tags through the text path (``tag_reader``): status, flags and attributes as for a tag record (source ``image``)."""
    out = tagger.predict(image)
    record = tag_reader(out.tags())
    attributes = {}
    probability = dict(out.general + out.character)
    for f in ontology.fields:
        value = (record["attributes"] or {}).get(f.name)
        if value is None:
            continue
        evidence = [f"{tagger.name}:{t}={probability.get(t, 0.0)}" for t in value["evidence"]]
        attributes[f.key] = {**value, "evidence": evidence, "source": "image" if value["source"] else None}
    return ImageSignals(tagger.name, [], record["status"], list(record["flags"]), attributes)


@dataclass
class TaggerBackend:
    """A WD tagger as an ``ImageBackend``: its tags read by the given ``TagReader``."""

    tagger: WDTagger
    ontology: object
    tag_reader: TagReader
    name: str = "wd"

    def signals(self, image: Image.Image) -> ImageSignals:
        return tagger_signals(image, self.tagger, self.ontology, self.tag_reader)
