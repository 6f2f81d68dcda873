"""AnimeFace 2009's detector (``libnvxs``, shipped inside the ``animeface`` wheel), called directly.

``animeface.detect`` fixes the search (a window step of 4, a pyramid factor of 1.095, the
smallest window 42.6 px) and then runs ``nv_face_analyze`` on every face: colour sampling by
k-means that this project does not use (``regions`` reads the colours). Calling the
library's ``nv_face_detect`` through ``ctypes`` with the same preparation as the wheel's
own C code (grey, 5x5 Gaussian, Laplacian, integral images) gives the same faces at the
same parameters (``test_images`` checks it), without the colour sampling, and lets the
search be coarser where that costs no accuracy (``faces``).

The structures below mirror ``nv_core_matrix.h``, ``nv_core_util.h`` and
``nv_face_detect.h`` of nvxs 1.0.2, the version the wheel is built from.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# the parameters animeface.detect passes (its _nvxs.c)
WHEEL_STEP = 4.0
WHEEL_SCALE_FACTOR = 1.095
WHEEL_MIN_WINDOW = 42.592
MAX_FACES = 4096  # as the wheel: candidates past this are not returned
MAX_PIXELS = 4096 * 4096  # the library sizes its buffers with an int: far below where that overflows


class _Matrix(ctypes.Structure):
    _fields_ = [
        ("list", ctypes.c_int),
        ("list_step", ctypes.c_uint),
        ("n", ctypes.c_int),
        ("m", ctypes.c_int),
        ("rows", ctypes.c_int),
        ("cols", ctypes.c_int),
        ("step", ctypes.c_int),
        ("alias", ctypes.c_int),
        ("v", ctypes.POINTER(ctypes.c_float)),
    ]


class _Rect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int)]


class _FacePosition(ctypes.Structure):
    _fields_ = [
        ("likelihood", ctypes.c_float),
        ("face", _Rect),
        ("left_eye", _Rect),
        ("right_eye", _Rect),
        ("nose", _Rect),
        ("mouth", _Rect),
        ("chin", _Rect),
    ]


_M = ctypes.POINTER(_Matrix)
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RawFace:
    """One face as the detector gives it: boxes (x, y, width, height) in the searched image's pixels."""

    likelihood: float
    face: Box
    left_eye: Box
    right_eye: Box


@lru_cache(maxsize=1)
def _library():
    """The loaded ``libnvxs`` (through the wheel's extension, which links it) and its five networks' addresses."""
    from animeface import _nvxs

    if not _nvxs.__file__.endswith(".so"):  # the wheel's pure-Python stand-in: the C extension is missing
        raise ImportError(f"animeface's C extension is missing ({_nvxs.__file__}); reinstall the animeface wheel for this platform")
    lib = ctypes.CDLL(_nvxs.__file__)  # symbols resolve through the extension to the libnvxs it links
    lib.nv_matrix3d_alloc.restype = _M
    lib.nv_matrix3d_alloc.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.nv_matrix_zero.argtypes = [_M]
    lib.nv_matrix_free.argtypes = [ctypes.POINTER(_M)]
    lib.nv_gray.argtypes = [_M, _M]
    lib.nv_gaussian5x5.argtypes = [_M, ctypes.c_int, _M, ctypes.c_int]
    lib.nv_laplacian1.argtypes = [_M, _M, ctypes.c_float]
    lib.nv_integral.argtypes = [_M, _M, ctypes.c_int]
    lib.nv_face_detect.restype = ctypes.c_int
    lib.nv_face_detect.argtypes = [
        ctypes.POINTER(_FacePosition),
        ctypes.c_int,
        _M,
        _M,
        ctypes.POINTER(_Rect),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_float,
        ctypes.c_float,
        ctypes.c_float,
    ]
    networks = {
        n: ctypes.addressof(ctypes.c_byte.in_dll(lib, f"nv_face_mlp_{n}")) for n in ("dir", "face_00", "face_01", "face_02", "parts")
    }
    return lib, networks


def _box(r: _Rect) -> Box:
    return (r.x, r.y, r.width, r.height)


def detect(
    rgb: np.ndarray, step: float = WHEEL_STEP, scale_factor: float = WHEEL_SCALE_FACTOR, min_window: float = WHEEL_MIN_WINDOW
) -> list[RawFace]:
    """Faces of an RGB uint8 array (height, width, 3), in the library's order (by box area, smallest first).

    A picture whose short side is under about 57 px holds no window and gives no face, as
    with the wheel. Parameters the library's search loop cannot take (a factor not above 1,
    a step not above 0, a window under the 32 px the networks see) raise ``ValueError``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"an RGB uint8 array (height, width, 3) is needed, not {rgb.dtype} {rgb.shape}")
    if not (step > 0 and scale_factor > 1 and min_window >= 32):
        raise ValueError(f"step > 0, scale_factor > 1 and min_window >= 32 are needed: {step}, {scale_factor}, {min_window}")
    rows, cols = rgb.shape[:2]
    if rows * cols > MAX_PIXELS:
        raise ValueError(f"{cols}x{rows} is over the {MAX_PIXELS} pixels searched at once; search a downscaled copy")
    if rows == 0 or cols == 0:
        return []
    lib, networks = _library()
    allocated: list = []

    def matrix(channels: int, r: int, c: int):
        m = lib.nv_matrix3d_alloc(channels, r, c)
        allocated.append(m)
        lib.nv_matrix_zero(m)
        return m

    try:
        bgr, gray = matrix(3, rows, cols), matrix(1, rows, cols)
        if bgr.contents.step != 3:  # this build packs a pixel's three floats; a padded one would need a strided copy
            raise RuntimeError(f"unexpected libnvxs matrix layout (step {bgr.contents.step})")
        pixels = np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32)  # the library's channel order is B, G, R
        ctypes.memmove(bgr.contents.v, pixels.ctypes.data, pixels.nbytes)
        lib.nv_gray(gray, bgr)
        smooth, edge = matrix(1, rows, cols), matrix(1, rows, cols)
        gray_integral, edge_integral = matrix(1, rows + 1, cols + 1), matrix(1, rows + 1, cols + 1)
        lib.nv_gaussian5x5(smooth, 0, gray, 0)
        lib.nv_laplacian1(edge, smooth, 4.0)
        lib.nv_integral(gray_integral, gray, 0)
        lib.nv_integral(edge_integral, edge, 0)
        found = (_FacePosition * MAX_FACES)()
        bagging = (ctypes.c_void_p * 3)(networks["face_01"], networks["face_02"], None)
        n = lib.nv_face_detect(
            found,
            MAX_FACES,
            gray_integral,
            edge_integral,
            ctypes.byref(_Rect(0, 0, cols, rows)),
            networks["dir"],
            networks["face_00"],
            bagging,
            2,
            networks["parts"],
            step,
            scale_factor,
            min_window,
        )
        return [RawFace(float(f.likelihood), _box(f.face), _box(f.left_eye), _box(f.right_eye)) for f in found[:n]]
    finally:
        for m in allocated:
            lib.nv_matrix_free(ctypes.byref(m))
