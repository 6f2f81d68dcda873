"""The offline default backend: AnimeFace 2009 faces, then hair, eye and skin colour read around them.

The ``animeface`` package ships its model inside the wheel, so this runs without weights
or network. ``analysis.analyse`` does the work; this class is its ``ImageBackend`` face.
"""

from __future__ import annotations

from PIL import Image

from charassets.domain.images.shapes import Face, ImageSignals


class AnimeFaceBackend:
    """Faces by AnimeFace 2009 (two passes on downscaled copies, ``faces``); colours by ``regions``, named and calibrated.

    Only the library's detector runs (``nvxs``), not its colour sampling (random, seeded from
    the clock), so a result depends on the image alone.
    """

    name = "animeface"

    def faces(self, image: Image.Image) -> list[Face]:
        return self.signals(image).faces

    def signals(self, image: Image.Image) -> ImageSignals:
        from charassets.domain.images.analysis import analyse

        return analyse(image)
