"""Decode one image file to its base image (the resize + centre crop every transform starts from).

JPEG goes through simplejpeg (libjpeg-turbo): the header gives the size, and the DCT scaling of
libjpeg (1/2, 1/4, 1/8) decodes straight to the smallest size that still covers the base, so a
64x64 proxy run decodes a 500x375 photo at 1/4 of its pixels; it decodes to RGBX, which Pillow
wraps without a copy for the one resize that follows. Everything else (PNG, WebP, CMYK
JPEG, ...) and any JPEG simplejpeg refuses goes through Pillow, which also reduces in its JPEG
draft mode. Errors come back as one-line `UnreadableImage` reasons for the caller to count.
"""

from __future__ import annotations

import math

import numpy as np

from nas.util import folded

from .transforms import fit_base

JPEG_MAGIC = b"\xff\xd8"


class UnreadableImage(Exception):
    """An image file that neither decoder can read (the message is one line)."""


def read_base(path: str, base: tuple[int, int]) -> np.ndarray:
    """The (H, W, 3) uint8 base image of `path`: covers `base` and is centre-cropped to it."""
    image = read_image(path, base)
    try:
        return fit_base(image, base)
    except (OSError, ValueError) as e:
        raise UnreadableImage(f"{path}: {_one_line(e)}") from None


def read_image(path: str, base: tuple[int, int]):
    """`path` decoded to an RGB PIL image at least as large as needed to cover `base`."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UnreadableImage(f"{path}: {e.strerror or e}") from None
    image = _decode_jpeg(data, base) if data[:2] == JPEG_MAGIC else None
    if image is None:
        return _decode_pillow(path, data, base)
    # RGBX is Pillow's own layout for RGB: wrapped without a copy (a copy costs as much as a resize)
    return Image.frombuffer("RGBX", (image.shape[1], image.shape[0]), image, "raw", "RGBX", 0, 1)


def _needed(height: int, width: int, base: tuple[int, int]) -> tuple[int, int]:
    scale = max(base[0] / height, base[1] / width)
    return math.ceil(height * scale), math.ceil(width * scale)


def _decode_jpeg(data: bytes, base) -> np.ndarray | None:
    try:
        import simplejpeg
    except ImportError:  # pragma: no cover - a dependency; Pillow decodes JPEG too
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):   # CMYK / YCCK: Pillow converts those
            return None
        min_h, min_w = _needed(height, width, base)
        # the fast integer DCT: ~1/3 less decode time, errors far below what a resize leaves
        return simplejpeg.decode_jpeg(data, colorspace="RGBX", fastdct=True, fastupsample=False,
                                      min_height=min_h, min_width=min_w)
    except (ValueError, RuntimeError):
        return None   # let Pillow try; it names the problem if it fails too


def _decode_pillow(path: str, data: bytes, base):
    import io

    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", _needed(image.height, image.width, base)[::-1])
        image = image.convert("RGB")
        image.load()
        return image
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files
        raise UnreadableImage(f"{path}: {_one_line(e)}") from None


def _one_line(error: BaseException) -> str:
    """The error's message on one line (cut to 200 characters), or its type's name."""
    return (folded(error) or type(error).__name__)[:200]
