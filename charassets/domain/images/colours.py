"""Colour science: sRGB to CIELAB, and naming a measured colour by the nearest reference shade.

The reference shades per field, the face region each field is read from and the zero-shot
prompt of a field all live in ``ontology/colors.yaml``; field keys are the ontology's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageCms

COLORS_FILE = Path(__file__).resolve().parents[2] / "ontology" / "colors.yaml"
UNKNOWN = "unknown"


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB uint8 -> (n, 3) CIELAB (L 0..100, a/b -128..127), through Pillow's colour management.

    Pillow's LAB bytes hold a and b as signed 8-bit numbers (two's complement): neutral
    grey is a = b = 0, stored as byte 0, and a = -1 as byte 255.
    """
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(1, -1, 3)
    transform = _srgb_to_lab()
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, mode="RGB"), transform)).reshape(-1, 3)
    ab = lab[:, 1:].view(np.int8).astype(np.float64)
    return np.column_stack([lab[:, 0] * (100.0 / 255.0), ab])


@lru_cache(maxsize=1)
def _srgb_to_lab():
    return ImageCms.buildTransformFromOpenProfiles(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")


def to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class ColorMatch:
    value: str
    confidence: float
    distance: float  # CIELAB distance (ΔE76) to the nearest reference shade
    margin: float = 1.0  # (next other name - nearest) / (next + nearest): 0 a tie, 1 no rival


class Palette:
    """Named reference colours per field; ``match`` names a measured colour.

    ``regions`` says which part of a face each field is read from (``hair``, ``eyes`` or
    ``skin``), ``prompts`` the zero-shot prompt template of a field (``{}`` the value; None: no
    zero-shot reading of that field).
    """

    def __init__(
        self,
        references: dict[str, dict[str, list[list[int]]]],
        regions: dict[str, str] | None = None,
        prompts: dict[str, str | None] | None = None,
    ):
        self.fields: dict[str, tuple[list[str], np.ndarray]] = {}
        for key, names in references.items():
            labels = [n for n, shades in names.items() for _ in shades]
            self.fields[key] = (labels, to_lab(np.array([s for shades in names.values() for s in shades])))
        self.regions = dict(regions or {})
        self.prompts = dict(prompts or {})

    @classmethod
    def load(cls, path: str | Path = COLORS_FILE) -> Palette:
        data = yaml.safe_load(Path(path).read_text())
        references = {k: v["shades"] for k, v in data.items()}
        regions = {k: v["region"] for k, v in data.items() if v.get("region")}
        prompts = {k: v["prompt"] for k, v in data.items() if "prompt" in v}
        return cls(references, regions, prompts)

    def match(self, key: str, rgb: tuple[int, int, int], likelihood: float = 1.0) -> ColorMatch:
        return self.match_lab(key, to_lab(np.array([rgb]))[0], likelihood)

    def match_lab(self, key: str, lab: np.ndarray, likelihood: float = 1.0) -> ColorMatch:
        labels, refs = self.fields[key]
        d = np.linalg.norm(refs - lab, axis=1)
        best = int(d.argmin())
        other = min((d[i] for i, n in enumerate(labels) if n != labels[best]), default=np.inf)
        margin = 1.0 if not np.isfinite(other) else float((other - d[best]) / (other + d[best] + 1e-9))
        closeness = float(np.exp(-max(0.0, d[best] - 15.0) / 30.0))  # far from every reference: doubt
        return ColorMatch(labels[best], round(likelihood * margin * closeness, 4), round(float(d[best]), 2), round(margin, 4))


@lru_cache(maxsize=1)
def default_palette() -> Palette:
    return Palette.load()
