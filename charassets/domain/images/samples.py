"""The pictures the project ships for the demo (``charassets/data/demo_images``, see its SOURCE.md).

``add_demo_images(out_dir, config)`` copies them into a demo dataset and adds an image
folder source to its ``sources.yaml`` config, so ``make demo`` shows pictures going through
the graph (decode, faces, colours, the several-characters flag, near-duplicate clusters).
"""

from __future__ import annotations

import shutil
from pathlib import Path

DEMO_IMAGES = Path(__file__).resolve().parents[2] / "data" / "demo_images"
SOURCE_NAME = "demo_images"
FOLDER = "images"


def demo_image_files() -> list[Path]:
    """The shipped demo pictures, in name order."""
    return sorted(DEMO_IMAGES.glob("*.webp"))


def add_demo_images(out_dir: str | Path, config: dict) -> dict:
    """Copy the demo pictures to ``out_dir/images`` and return ``config`` with an image folder source for them.

    ``config`` is a ``sources.yaml`` mapping (``{"sources": [...]}``); the source's ``uri`` is
    relative, like the demo's other sources. Nothing is added when no pictures are shipped.
    """
    files = demo_image_files()
    if not files:
        return config
    folder = Path(out_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, folder / f.name)
    source = {"name": SOURCE_NAME, "uri": FOLDER, "format": "images"}
    return {**config, "sources": [*[s for s in config.get("sources", []) if s.get("name") != SOURCE_NAME], source]}
