"""CLIP / SigLIP image backend through transformers: image embeddings and zero-shot attribute prompts.

Any CLIP-style checkpoint by hub id or local path (``AutoModel`` with
``get_image_features`` / ``get_text_features``); images are prepared by the model's own
image processor (the Pillow implementations, so torchvision is not needed). Zero-shot:
for each single-valued field the ontology lets an image decide (its ``fill``), one prompt
per value (``prompts``: the template ``colors.yaml`` gives the field, else a generic one);
the value whose prompt is closest to the image wins, with the softmax over that field's
prompts as confidence. As a backend (``ClipBackend``), animeface counts the faces first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from charassets.domain.images.colours import Palette, default_palette
from charassets.domain.images.shapes import ImageSignals

GENERIC_PROMPT = "an anime character, {field}: {value}"


def prompts(ontology, palette: Palette | None = None) -> dict[str, tuple[str, ...]]:
    """Field key -> one prompt per value, for the single-valued fields an image may decide (ontology ``fill``)."""
    palette = palette or default_palette()
    out = {}
    for f in ontology.fields:
        if f.cardinality != "single" or not f.values or "image" not in f.fill:
            continue
        template = palette.prompts.get(f.key, GENERIC_PROMPT.replace("{field}", f.name.lower()).replace("{value}", "{}"))
        if template is not None:  # colors.yaml may switch a field's zero-shot reading off
            out[f.key] = tuple(template.format(v.replace("_", " ")) for v in f.values)
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _features(out):
    return out if hasattr(out, "shape") else out.pooler_output


@dataclass
class ClipImageModel:
    model: str
    device: str = "cpu"
    batch_size: int = 32
    _loaded: tuple | None = field(default=None, repr=False)
    _prompts: dict = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return f"img-{self.model.rstrip('/').rsplit('/', 1)[-1]}"

    def _load(self) -> tuple:
        if self._loaded is None:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

            model = AutoModel.from_pretrained(self.model).to(self.device).eval()
            self._loaded = (model, AutoTokenizer.from_pretrained(self.model), AutoImageProcessor.from_pretrained(self.model))
        return self._loaded

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        """Unit-length image embeddings, one row per image."""
        import torch

        model, _, processor = self._load()
        rows = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                pixels = processor(images=[im.convert("RGB") for im in images[i : i + self.batch_size]], return_tensors="pt")
                rows.append(_features(model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))).float().cpu().numpy())
        return _normalise(np.concatenate(rows)) if rows else np.zeros((0, 0), dtype=np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer, _ = self._load()
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
            out = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
        return _normalise(_features(out).float().cpu().numpy())

    def zero_shot(self, image_vectors: np.ndarray, ontology) -> list[dict[str, dict]]:
        """Per image, per prompted field: ``{value, confidence, evidence, source}`` from the closest value prompt."""
        model, _, _ = self._load()
        scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0
        out: list[dict[str, dict]] = [{} for _ in range(len(image_vectors))]
        for key, texts in prompts(ontology).items():
            spec = ontology.field(key)
            if texts not in self._prompts:  # the same prompts for every image: encoded once
                self._prompts[texts] = self.encode_texts(list(texts))
            text = self._prompts[texts]
            logits = scale * image_vectors @ text.T
            proba = np.exp(logits - logits.max(1, keepdims=True))
            proba /= proba.sum(1, keepdims=True)
            for i, row in enumerate(proba):
                best = int(row.argmax())
                out[i][key] = {
                    "value": spec.values[best],
                    "confidence": round(float(row[best]), 4),
                    "evidence": [f"{self.id}:zero-shot"],
                    "source": "image",
                }
        return out


@lru_cache(maxsize=2)
def cached_model(spec: str) -> ClipImageModel:
    """One loaded model per process and spec."""
    return ClipImageModel(spec)


@dataclass
class ClipBackend:
    """Animeface counts the faces; for a single-character picture, zero-shot prompts name the attributes."""

    model: ClipImageModel
    ontology: object
    name: str = "clip"

    def signals(self, image: Image.Image) -> ImageSignals:
        from charassets.domain.images.analysis import analyse

        counted = analyse(image)
        if counted.status != "ok":
            return ImageSignals(self.name, counted.faces, counted.status, counted.flags, counted.attributes)
        answers = self.model.zero_shot(self.model.encode_images([image]), self.ontology)[0]
        return ImageSignals(self.name, counted.faces, "ok", counted.flags, {**counted.attributes, **answers})
