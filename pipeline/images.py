"""Decode any chest X-ray file (PNG, JPEG, DICOM; L, RGB, RGBA, P, 16-bit) to an 8-bit grayscale PIL image.

One decoder for conversion and prediction, so that a model sees the same pixels at training and at
inference. NIH's PNGs are mostly `L`, a few hundred are `RGBA` with R=G=B; hospital exports are often
16-bit PNG or DICOM, whose stored values need the DICOM rescale and window before they mean brightness.

16-bit (and 32-bit integer) images are scaled by their bit depth, never by their own maximum, so that the
same stored value gives the same brightness in every image: the depth is the PNG's `sBIT` chunk when it has
one, else the smallest depth that holds the image's maximum, 2**ceil(log2(max + 1)) - 1 (a 12-bit X-ray
stored in 16 bits, max <= 4095, is divided by 4095). JPEGs are turned upright by their EXIF orientation.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import UserError

# The shorter side `chestxray convert` resizes to: 256 px keeps 224 px crops sharp at a quarter of NIH's 1024 px.
DEFAULT_IMAGE_SIZE = 256

ImageSource = str | Path | BinaryIO | bytes
DICOM_SUFFIXES = (".dcm", ".dicom")
# zlib's RLE strategy after PNG's row filters: measured on NIH images at 256 px, ~3x faster to write than
# Pillow's default (level 6) and ~10% smaller (see BENCHMARKS.md).
PNG_SAVE_OPTIONS = {"compress_level": 1, "compress_type": zlib.Z_RLE}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


class ImageDecodeError(UserError, ValueError):
    """A file is not a readable image; the message names the file."""


def _name(source: ImageSource) -> str:
    if isinstance(source, str | Path):
        return str(source)
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def _is_dicom(source: ImageSource, head: bytes) -> bool:
    suffix_says = isinstance(source, str | Path) and Path(source).suffix.lower() in DICOM_SUFFIXES
    return suffix_says or head[128:132] == b"DICM"


def _to_uint8(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto 0..255, values outside clipped. `high < low` maps in reverse order,
    which is what pydicom's windowing output means under a negative rescale slope."""
    array = array.astype(np.float64)
    scale = 255.0 / (high - low) if high != low else 0.0
    return np.clip(np.rint((array - low) * scale), 0, 255).astype(np.uint8)


def _scale_to_uint8(array: np.ndarray, low: float, high: float) -> Image.Image:
    return Image.fromarray(_to_uint8(array, low, high), mode="L")


def png_significant_bits(data: bytes) -> int | None:
    """The bit depth a PNG's `sBIT` chunk declares for its (first) channel; None without a valid one (1-16)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"sBIT":
            bits = data[position + 8] if length and position + 8 < len(data) else 0
            return bits if 1 <= bits <= 16 else None
        if kind in (b"IDAT", b"IEND"):  # sBIT comes before the image data or not at all
            return None
        position += 12 + length
    return None


def implied_bit_depth(maximum: float) -> int:
    """The smallest bit depth holding `maximum`: 4000 → 12 (a 12-bit image in a 16-bit container)."""
    return max(1, math.ceil(math.log2(maximum + 1)))


def to_grayscale(image: Image.Image, bits: int | None = None) -> Image.Image:
    """8-bit grayscale (`L`) version of `image`.

    Integer images deeper than 8 bits are divided by their bit depth's maximum, 2**bits - 1 (`bits`: e.g.
    the PNG's `sBIT`; default: `implied_bit_depth` of the image's maximum), so brightness does not depend on
    the content; signed images with negative values and float (`F`) images, which have no bit depth, are
    scaled by their range (0..max, or min..max when negative); NaN or infinite values are refused.
    Colour and palette images go through Pillow's luminance conversion; alpha is dropped.
    Raises `ImageDecodeError` for values or modes that have no grayscale meaning.
    """
    if image.mode == "L":
        return image
    if image.mode in INTEGER_MODES or image.mode == "F":
        array = np.asarray(image)
        if not np.isfinite(array).all():
            raise ImageDecodeError(f"mode {image.mode} image holds NaN or infinite values")
        low = min(0.0, float(array.min()))
        if image.mode == "F" or low < 0:
            return _scale_to_uint8(array, low, float(array.max()))
        return _scale_to_uint8(array, 0.0, float(2 ** (bits or implied_bit_depth(float(array.max()))) - 1))
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode in ("P", "PA", "LA", "RGBA"):
        image = image.convert("RGBA")
    try:
        return image.convert("L")
    except ValueError as exc:
        raise ImageDecodeError(f"mode {image.mode} image cannot be converted to grayscale ({exc})") from exc


def _first_frame(array: np.ndarray, dataset) -> np.ndarray:
    return array[0] if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else array


def _dicom_colour(array: np.ndarray, dataset, photometric: str, name: str) -> Image.Image:
    """Colour DICOM pixels as luminance: RGB (and YBR, which pydicom's `pixel_array` has already turned into
    RGB) scaled by BitsStored, PALETTE COLOR through its colour LUT."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, dataset)
        bits = 8 if rgb.dtype == np.uint8 else 16
    elif photometric == "RGB" or photometric.startswith("YBR_"):
        rgb, bits = array, int(dataset.BitsStored)
    else:
        raise ImageDecodeError(
            f"{name}: DICOM PhotometricInterpretation {photometric!r} is not supported; "
            "expected MONOCHROME1, MONOCHROME2, RGB, YBR_* or PALETTE COLOR"
        )
    return Image.fromarray(_to_uint8(rgb, 0.0, float(2**bits - 1)), mode="RGB").convert("L")


def _decode_dicom(data: bytes, name: str) -> Image.Image:
    """DICOM pixels as displayed: rescale slope/intercept, VOI window (or LUT), MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        array = _first_frame(dataset.pixel_array, dataset)
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a readable DICOM image ({exc})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        return _dicom_colour(array, dataset, photometric, name)
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
    """The range pydicom's `apply_voi_lut` maps onto: the LUT's bit depth, or the rescaled stored range.

    Under a negative rescale slope the second bound is the smaller: pydicom's windowing maps the window's
    lower edge onto the first bound, so the pair is kept in this order (see `_to_uint8`)."""
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
    """Open a PNG/JPEG/DICOM file (path, file object or bytes) as an 8-bit grayscale `L` image, upright
    by its EXIF orientation.

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
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a readable image file (expected PNG, JPEG or DICOM)") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's guard against a small file that decodes to gigabytes; its message gives the size.
        raise ImageDecodeError(f"{name}: not decoded: {exc} (the limit is PIL.Image.MAX_IMAGE_PIXELS)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: not a readable or complete image file ({exc})") from exc
    try:
        return to_grayscale(image, png_significant_bits(data))
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{name}: {exc}") from exc


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
