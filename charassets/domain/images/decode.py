"""Safe image decoding: any bytes in, an RGB image and its facts out, or a rejection with a reason.

Handled: empty files, non-images, truncated or corrupt data, decompression bombs
(dimensions are checked from the header, before any pixel is decoded), animated images
(the first frame is used, and the frame count kept), every Pillow mode (CMYK, P with
transparency, LA/RGBA over white, 16-bit and float greyscale scaled to 8 bits) and EXIF
orientation. Paths are confined to their source root.

High-bit-depth images (16-bit and 32-bit integer, float) are scaled to 8 bits by Pillow
itself, after shrinking them to at most ``HIGH_DEPTH_SIDE`` on the long side: memory stays
near the size of the decoded file (no float64 copy of a 40-megapixel image).

Pictures are decoded at reduced size where that is free: nothing downstream needs more
than ``DECODE_SIDE`` px on the long side (thumbnail 256, working copy 1024, face passes
320 at most), so a JPEG is decoded by its DCT scaling (``draft``: 1/2, 1/4 or 1/8) and any
other format shrunk by an integer factor (``reduce``), never below ``DECODE_SIDE``. The
facts (width, height) stay those of the picture itself.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~6,300 x 6,300; larger is treated as a decompression bomb
THUMBNAIL = 256
HIGH_DEPTH_SIDE = 2048  # 16-bit, 32-bit and float images are shrunk to this (long side) before going to 8 bits
WORKING_SIDE = 1024  # the working copy's long side (the face detector works at this size anyway)
WORKING_ORIGINAL_BYTES = 2**20  # a file at most this big, and no larger than WORKING_SIDE, is its own working copy
DECODE_SIDE = 1024  # pictures are decoded to no less than this on their long side (JPEG draft, integer reduce)
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


class ImageRejected(ValueError):
    """An input that cannot be used as an image; the message is the quarantine reason."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied; at reduced size (at least DECODE_SIDE) when the picture is much larger
    width: int  # the picture's own size, EXIF orientation applied
    height: int
    format: str
    mode: str  # the mode as stored, before conversion
    frames: int
    sha256: str
    phash: str  # 64-bit perceptual hash, hex

    @property
    def animated(self) -> bool:
        return self.frames > 1

    def thumbnail(self, size: int = THUMBNAIL) -> bytes:
        """A WebP thumbnail (longest side ``size``) for later stages and previews."""
        buf = io.BytesIO()
        ImageOps.contain(self.image, (size, size)).save(buf, format="WEBP", quality=90)
        return buf.getvalue()

    def working_copy(self, original: bytes, side: int = WORKING_SIDE) -> bytes:
        """Bytes that decode to this image at most ``side`` on its long side: what later stages read instead of the source.

        A small file (at most ``side`` and ``WORKING_ORIGINAL_BYTES``) is kept as it is (decoding
        it again gives the very same image); otherwise the image is shrunk the way the face
        detector shrinks it (bilinear) and stored as lossless WebP (colours stay exact).
        """
        if max(self.width, self.height) <= side and len(original) <= WORKING_ORIGINAL_BYTES:
            return original
        im = self.image
        if max(im.size) > side:
            scale = side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format="WEBP", lossless=True, quality=0, method=0)
        return buf.getvalue()


def confine(root: str | Path, relative: str | Path) -> Path:
    """``root/relative`` resolved (symlinks included); an error if it leaves ``root``."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ImageRejected(f"path escapes the source root: {relative}")
    return path


HIGH_DEPTH_MODES = ("I", "F")  # and every "I;16..." mode


def _high_depth_to_l(im: Image.Image, max_side: int) -> Image.Image:
    """A 16-bit, 32-bit or float image as 8-bit greyscale, its range stretched to 0-255.

    Shrunk first (Pillow resamples these modes natively), then scaled by Pillow's own
    per-pixel transform: the full-size image is never copied, let alone as float64.
    """
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BOX)
    if im.mode not in HIGH_DEPTH_MODES:  # I;16, I;16B...: as 32-bit integers (small by now)
        im = im.convert("I")
    lo, hi = im.getextrema()
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:  # flat, or NaN/infinite floats
        return Image.new("L", im.size, 0)
    scale = 255.0 / (hi - lo)
    offset = -lo * scale + 0.5  # the conversion to 8 bits truncates: +0.5 rounds
    return im.point(lambda v: v * scale + offset).convert("L")


def to_rgb(im: Image.Image, max_side: int = HIGH_DEPTH_SIDE) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited over white.

    High-bit-depth modes are scaled to 8 bits and, when larger, shrunk to ``max_side``.
    """
    if im.mode in HIGH_DEPTH_MODES or im.mode.startswith("I;16"):
        return _high_depth_to_l(im, max_side).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


REDUCIBLE = ("RGB", "RGBA", "L", "LA", "CMYK")
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _transposed(im: Image.Image, orientation: int | None) -> Image.Image:
    return im.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else im


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, side: int | None = DECODE_SIDE) -> DecodedImage:
    """Decode ``data`` safely (at reduced size, no less than ``side``; None: full size); ``ImageRejected`` says why not."""
    if not data:
        raise ImageRejected("empty file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(io.BytesIO(data))
            fmt, mode, (w, h) = im.format or "unknown", im.mode, im.size
            if w * h > max_pixels:
                raise ImageRejected(f"{w}x{h} pixels exceeds the limit of {max_pixels:,} (decompression bomb guard)")
            frames = int(getattr(im, "n_frames", 1))
            im.seek(0)
            orientation = im.getexif().get(0x0112)
            if side and fmt == "JPEG" and max(w, h) >= 2 * side:  # DCT scaling: the decoder itself skips detail
                im.draft(None, (max(1, side * w // max(w, h)), max(1, side * h // max(w, h))))
            im.load()
            if side and max(im.size) >= 2 * side and im.mode in REDUCIBLE:
                im = _transposed(im.reduce(max(im.size) // side), orientation)  # a new image: turned here, by its tag
            else:
                ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an upright image
            w, h = (h, w) if orientation in SWAPS_AXES else (w, h)
            rgb = to_rgb(im)
            del im
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected(f"corrupt or truncated image data: {e}") from None
    return DecodedImage(rgb, w, h, fmt, mode, frames, digest, str(imagehash.phash(rgb)))
