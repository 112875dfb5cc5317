"""Decode any chest X-ray file (PNG, JPEG, DICOM; L, RGB, RGBA, P, 16-bit) to an 8-bit grayscale PIL image.

One decoder for conversion and prediction, so that a model sees the same pixels at training and at
inference. NIH's PNGs are mostly `L`, a few hundred are `RGBA` with R=G=B; hospital exports are often
16-bit PNG or DICOM, whose stored values need the DICOM rescale and window before they mean brightness.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageSource = str | Path | BinaryIO | bytes
DICOM_SUFFIXES = (".dcm", ".dicom")
# zlib's RLE strategy after PNG's row filters: measured on NIH images at 256 px, ~3x faster to write than
# Pillow's default (level 6) and ~10% smaller (see BENCHMARKS.md).
PNG_SAVE_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_RLE}


class ImageDecodeError(ValueError):
    """A file is not a readable image; the message names the file."""


def _name(source: ImageSource) -> str:
    if isinstance(source, str | Path):
        return str(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def _is_dicom(source: ImageSource, head: bytes) -> bool:
    suffix_says = isinstance(source, str | Path) and Path(source).suffix.lower() in DICOM_SUFFIXES
    return suffix_says or head[128:132] == b"DICM"


def _scale_to_uint8(array: np.ndarray, low: float, high: float) -> Image.Image:
    """Map [low, high] linearly onto 0..255 (values outside are clipped) as an `L` image."""
    array = array.astype(np.float64)
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(np.clip(np.rint((array - low) * scale), 0, 255).astype(np.uint8), mode="L")


def to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale (`L`) version of `image`.

    16-bit and 32-bit images are scaled by their actual value range (0..max, or min..max when negative)
    rather than clipped: a 12-bit X-ray stored in 16 bits would otherwise come out almost black.
    Colour and palette images go through Pillow's luminance conversion; alpha is dropped.
    """
    if image.mode == "L":
        return image
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        array = np.asarray(image)
        return _scale_to_uint8(array, min(0.0, float(array.min())), float(array.max()))
    if image.mode in ("P", "PA", "LA", "RGBA", "La"):
        image = image.convert("RGBA")
    return image.convert("L")


def _decode_dicom(data: bytes, name: str) -> Image.Image:
    """DICOM pixels as displayed: rescale slope/intercept, VOI window (or LUT), MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        array = dataset.pixel_array
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a readable DICOM image ({exc})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        frame = array[0] if array.ndim == 4 else array
        return Image.fromarray(frame.astype(np.uint8)).convert("L")
    if array.ndim == 3:
        array = array[0]
    array = apply_modality_lut(array, dataset)
    if dataset.get("VOILUTSequence") or ("WindowCenter" in dataset and "WindowWidth" in dataset):
        array = apply_voi_lut(array, dataset)
        low, high = _voi_output_range(dataset)
    else:
        low, high = float(array.min()), float(array.max())
    image = _scale_to_uint8(array, low, high)
    if photometric == "MONOCHROME1":
        image = Image.fromarray(255 - np.asarray(image), mode="L")
    return image


def _lut_range(sequence) -> tuple[float, float]:
    return 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)


def _voi_output_range(dataset) -> tuple[float, float]:
    """The range pydicom's `apply_voi_lut` maps onto: the LUT's bit depth, or the rescaled stored range."""
    if dataset.get("VOILUTSequence"):
        return _lut_range(dataset.VOILUTSequence)
    if dataset.get("ModalityLUTSequence"):
        return _lut_range(dataset.ModalityLUTSequence)
    bits = int(dataset.BitsStored)
    signed = int(dataset.PixelRepresentation) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
        low, high = low * slope + intercept, high * slope + intercept
    return float(low), float(high)


def load_image(source: ImageSource) -> Image.Image:
    """Open a PNG/JPEG/DICOM file (path, file object or bytes) as an 8-bit grayscale `L` image.

    Raises `ImageDecodeError` naming the file when it is not an image, is truncated or unreadable.
    """
    name = _name(source)
    try:
        if isinstance(source, bytes):
            data = source
        elif isinstance(source, str | Path):
            data = Path(source).read_bytes()
        else:
            data = source.read()
    except OSError as exc:
        raise ImageDecodeError(f"{name}: cannot read ({exc})") from exc
    if _is_dicom(source, data[:132]):
        return _decode_dicom(data, name)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: not a readable or complete image file ({exc})") from exc
    return to_grayscale(image)


def resize_keep_aspect(image: Image.Image, shorter_side: int) -> Image.Image:
    """Shrink so the shorter side is `shorter_side`, keeping the aspect ratio; never enlarges; 0 keeps it.

    Lanczos after a 2x box `reduce` (Pillow's `reducing_gap`): the quality of Lanczos at close to the
    cost of bilinear for the 4x reduction from NIH's 1024 px.
    """
    width, height = image.size
    shorter = min(width, height)
    if shorter_side <= 0 or shorter <= shorter_side:
        return image
    size = (max(1, round(width * shorter_side / shorter)), max(1, round(height * shorter_side / shorter)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of `image`, written with the fast settings in `PNG_SAVE_OPTIONS`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **PNG_SAVE_OPTIONS)
    return buffer.getvalue()


def prepare_png(source: ImageSource, shorter_side: int) -> bytes:
    """Decode, normalise to `L`, resize and re-encode one image: the per-image work of the conversion."""
    return encode_png(resize_keep_aspect(load_image(source), shorter_side))
