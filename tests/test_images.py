"""Decoding any input image to 8-bit grayscale (pipeline.images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipeline import images, synthetic
from pipeline.images import ImageDecodeError

GRAY = np.arange(48 * 32, dtype=np.uint8).reshape(32, 48) % 251


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_rgba_with_equal_channels_gives_the_gray_values() -> None:
    rgba = Image.fromarray(np.dstack([GRAY, GRAY, GRAY, np.full_like(GRAY, 255)]), mode="RGBA")
    decoded = images.load_image(png_bytes(rgba))
    assert decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), GRAY)


@pytest.mark.parametrize("mode", ["RGB", "P", "LA", "1"])
def test_other_modes_become_l(mode: str) -> None:
    source = Image.fromarray(GRAY, mode="L").convert(mode)
    decoded = images.load_image(png_bytes(source))
    assert decoded.mode == "L" and decoded.size == (48, 32)
    if mode in ("RGB", "LA"):
        assert np.array_equal(np.asarray(decoded), GRAY)


def test_palette_image_keeps_its_colours_as_luminance() -> None:
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    palette.putpixel((1, 1), 1)
    palette.putpixel((2, 2), 2)
    decoded = np.asarray(images.load_image(png_bytes(palette)))
    assert decoded[0, 0] == 0 and decoded[1, 1] == 255
    assert decoded[2, 2] == round(0.299 * 255)


def test_16_bit_is_scaled_by_its_range_not_clipped() -> None:
    twelve_bit = (GRAY.astype(np.uint16) * 16)  # values up to 4000: a 12-bit image in a 16-bit PNG
    decoded = np.asarray(images.load_image(png_bytes(Image.fromarray(twelve_bit))))
    expected = np.rint(twelve_bit * 255.0 / twelve_bit.max())
    assert Image.fromarray(twelve_bit).mode == "I;16"
    assert np.array_equal(decoded, expected)
    assert decoded.max() == 255


def test_32_bit_signed_is_scaled_from_its_minimum() -> None:
    values = GRAY.astype(np.int32) - 100
    decoded = np.asarray(images.to_grayscale(Image.fromarray(values, mode="I")))
    assert decoded.min() == 0 and decoded.max() == 255


def test_jpeg_file_and_file_object(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    Image.fromarray(GRAY, mode="L").convert("RGB").save(path, quality=95)
    from_path = images.load_image(path)
    with path.open("rb") as handle:
        from_handle = images.load_image(handle)
    assert from_path.mode == from_handle.mode == "L"
    assert np.abs(np.asarray(from_path).astype(int) - GRAY).mean() < 3
    assert np.array_equal(np.asarray(from_path), np.asarray(from_handle))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for name, value in elements.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_min_max_without_window(tmp_path: Path) -> None:
    pixels = np.linspace(100, 3000, 64, dtype=np.uint16).reshape(8, 8)
    decoded = np.asarray(images.load_image(write_dicom(tmp_path / "a.dcm", pixels)))
    assert decoded[0, 0] == 0 and decoded[-1, -1] == 255
    assert np.all(np.diff(decoded.ravel().astype(int)) >= 0)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.linspace(100, 3000, 64, dtype=np.uint16).reshape(8, 8)
    normal = np.asarray(images.load_image(write_dicom(tmp_path / "a.dcm", pixels)))
    inverted = np.asarray(images.load_image(write_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1")))
    assert np.array_equal(inverted, 255 - normal)


def test_dicom_rescale_and_window(tmp_path: Path) -> None:
    """Window 0..1000 in rescaled units (value*2-1000): stored 500 → 0 → black, 1000 → 1000 → white."""
    pixels = np.array([[0, 400, 500, 750, 1000, 2000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w.dcm", pixels, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=500, WindowWidth=1000)
    decoded = np.asarray(images.load_image(path))[0]
    assert list(decoded[[0, 1, 2]]) == [0, 0, 0]
    assert list(decoded[[4, 5]]) == [255, 255]
    assert 120 <= decoded[3] <= 135  # rescaled 500: the window's centre


def test_dicom_found_by_magic_without_suffix(tmp_path: Path) -> None:
    pixels = np.linspace(0, 4000, 16, dtype=np.uint16).reshape(4, 4)
    data = write_dicom(tmp_path / "a.dcm", pixels).read_bytes()
    assert images.load_image(data).mode == "L"


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_non_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=r"notes\.png: not a readable"):
        images.load_image(path)


def test_truncated_png_and_broken_dicom_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    synthetic.save_image(synthetic.make_pixels(["Mass"], 64, np.random.default_rng(0)), path, "L")
    synthetic.truncate_file(path)
    with pytest.raises(ImageDecodeError, match=r"cut\.png: not a readable or complete image"):
        images.load_image(path)
    broken = tmp_path / "scan.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\1\2\3")
    with pytest.raises(ImageDecodeError, match=r"scan\.dcm: not a readable DICOM"):
        images.load_image(broken)
    with pytest.raises(ImageDecodeError, match=r"missing\.png: cannot read"):
        images.load_image(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("size", "target", "expected"),
    [((100, 50), 32, (64, 32)), ((50, 100), 25, (25, 50)), ((64, 64), 128, (64, 64)), ((90, 30), 0, (90, 30))],
)
def test_resize_keeps_aspect_and_never_enlarges(size, target, expected) -> None:
    assert images.resize_keep_aspect(Image.new("L", size), target).size == expected


def test_prepare_png_round_trip_keeps_the_signal() -> None:
    pixels = synthetic.make_pixels(["Hernia"], 128, np.random.default_rng(0))
    data = images.prepare_png(png_bytes(Image.fromarray(pixels, mode="L")), 32)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (32, 32)
    cx, cy = synthetic.signal_center("Hernia")
    array = np.asarray(decoded).astype(int)
    assert array[int(cy * 32), int(cx * 32)] > array.mean() + 50
