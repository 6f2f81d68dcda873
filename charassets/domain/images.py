"""Safe image decoding: any bytes in, an RGB image and its facts out, or a rejection with a reason.

Handled: empty files, non-images, truncated or corrupt data, decompression bombs
(dimensions are checked from the header, before any pixel is decoded), animated images
(the first frame is used, and the frame count kept), every Pillow mode (CMYK, P with
transparency, LA/RGBA over white, 16-bit and float greyscale scaled to 8 bits) and EXIF
orientation. Paths are confined to their source root.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # ~6,300 x 6,300; larger is treated as a decompression bomb
THUMBNAIL = 256


class ImageRejected(ValueError):
    """An input that cannot be used as an image; the message is the quarantine reason."""


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    width: int
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


def confine(root: str | Path, relative: str | Path) -> Path:
    """``root/relative`` resolved (symlinks included); an error if it leaves ``root``."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ImageRejected(f"path escapes the source root: {relative}")
    return path


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited over white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` safely; raises ``ImageRejected`` with the reason for anything unusable."""
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
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = to_rgb(im)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageRejected(f"corrupt or truncated image data: {e}") from None
    return DecodedImage(rgb, rgb.width, rgb.height, fmt, mode, frames, digest, str(imagehash.phash(rgb)))
