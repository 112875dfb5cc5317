"""Decoding any input image to 8-bit grayscale (pipeline.images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo
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


def test_16_bit_is_scaled_by_its_implied_bit_depth_not_clipped() -> None:
    twelve_bit = GRAY.astype(np.uint16) * 16  # values up to 4000: a 12-bit image in a 16-bit PNG
    decoded = np.asarray(images.load_image(png_bytes(Image.fromarray(twelve_bit))))
    assert Image.fromarray(twelve_bit).mode == "I;16"
    assert np.array_equal(decoded, np.rint(twelve_bit * 255.0 / 4095))


def sixteen_bit_png(values: np.ndarray, significant_bits: int | None = None) -> bytes:
    info = PngInfo()
    if significant_bits is not None:
        info.add(b"sBIT", bytes([significant_bits]))
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_16_bit_brightness_does_not_depend_on_the_content() -> None:
    """Two 12-bit images with different maxima give the same brightness for the same stored value (scaling by
    each image's own maximum would not); a constant 12-bit image keeps its level instead of turning white."""
    first = GRAY.astype(np.uint16) * 16  # max 4000
    second = first // 2 + 2048  # max 4048, same 12 bits
    a, b = (np.asarray(images.load_image(sixteen_bit_png(v))) for v in (first, second))
    shared = np.intersect1d(first, second)
    assert len(shared) > 10
    for value in shared:
        assert a[first == value][0] == b[second == value][0] == round(int(value) * 255 / 4095)
    constant = np.asarray(images.load_image(sixteen_bit_png(np.full((8, 8), 2000), significant_bits=12)))
    assert np.all(constant == round(2000 * 255 / 4095))


def test_16_bit_png_sbit_chunk_sets_the_depth() -> None:
    values = GRAY.astype(np.uint16) * 16
    data = sixteen_bit_png(values, significant_bits=14)
    assert images.png_significant_bits(data) == 14 and images.png_significant_bits(sixteen_bit_png(values)) is None
    assert np.array_equal(np.asarray(images.load_image(data)), np.rint(values * 255.0 / (2**14 - 1)))


def test_float_image_with_nan_is_refused() -> None:
    values = GRAY.astype(np.float32)
    values[3, 4] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(values, mode="F").save(buffer, format="TIFF")
    with pytest.raises(ImageDecodeError, match=r"scan\.tif: mode F image holds NaN"):
        images.load_image(io.BufferedReader(NamedBytes(buffer.getvalue(), "scan.tif")))


class NamedBytes(io.BytesIO):
    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


def test_premultiplied_la_converts_and_an_unconvertible_mode_is_a_decode_error() -> None:
    la = Image.merge("La", [Image.fromarray(GRAY, mode="L"), Image.new("L", GRAY.shape[::-1], 255)])
    assert np.array_equal(np.asarray(images.to_grayscale(la)), GRAY)
    with pytest.raises(ImageDecodeError, match="mode LAB image cannot be converted to grayscale"):
        images.to_grayscale(Image.new("LAB", (4, 4)))


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


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6: the camera stored the image rotated; displayed, it is turned 90 degrees clockwise."""
    stored = np.zeros((32, 48), dtype=np.uint8)
    stored[:8, :8] = 255  # a white corner, top left as stored
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored, mode="L").save(path, quality=95, exif=exif)
    decoded = np.asarray(images.load_image(path)).astype(int)
    upright = np.rot90(stored, k=-1).astype(int)
    assert decoded.shape == upright.shape == (48, 32)
    assert np.abs(decoded - upright).mean() < 5 and decoded[2, -3] > 200


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> Path:
    """A DICOM file of `pixels` (rows x columns, or rows x columns x 3 for RGB), 16 bits allocated and 12
    stored unless `elements` (any DICOM keywords) say otherwise."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (pixels.shape[2] if pixels.ndim == 3 else 1), photometric
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for name, value in elements.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.astype(np.uint8 if ds.BitsAllocated == 8 else np.uint16).tobytes()
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
    path = write_dicom(
        tmp_path / "w.dcm", pixels, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=500, WindowWidth=1000
    )
    decoded = np.asarray(images.load_image(path))[0]
    assert list(decoded[[0, 1, 2]]) == [0, 0, 0]
    assert list(decoded[[4, 5]]) == [255, 255]
    assert 120 <= decoded[3] <= 135  # rescaled 500: the window's centre


def test_dicom_window_under_negative_rescale_slope(tmp_path: Path) -> None:
    """Slope -1, intercept 4000: stored 0 is rescaled 4000, above the window 1000..3000 → white; stored 4000 is
    rescaled 0 → black. (The window's bounds come out of pydicom in reverse order; not all black.)"""
    pixels = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "n.dcm", pixels, RescaleSlope=-1, RescaleIntercept=4000, WindowCenter=2000, WindowWidth=2000
    )
    decoded = np.asarray(images.load_image(path))[0].astype(int)
    assert decoded[0] == decoded[1] == 255 and decoded[3] == decoded[4] == 0
    assert 120 <= decoded[2] <= 135


def test_dicom_16_bit_rgb_is_scaled_by_bits_stored(tmp_path: Path) -> None:
    gray = np.array([[4095, 2048], [1024, 0]], dtype=np.uint16)  # 12 bits stored
    path = write_dicom(tmp_path / "rgb.dcm", np.dstack([gray, gray, gray]), "RGB")
    decoded = np.asarray(images.load_image(path))
    assert np.array_equal(decoded, np.rint(gray * 255.0 / 4095))


def test_dicom_palette_colour_goes_through_its_lut(tmp_path: Path) -> None:
    """Indices 0..3 → black, white, pure green, pure blue (16-bit LUT entries) → their luminance."""
    red, green, blue = ([0, 65535, 0, 0], [0, 65535, 65535, 0], [0, 65535, 0, 65535])
    lut = {}
    for colour, entries in (("Red", red), ("Green", green), ("Blue", blue)):
        lut[f"{colour}PaletteColorLookupTableDescriptor"] = [4, 0, 16]
        lut[f"{colour}PaletteColorLookupTableData"] = np.array(entries, dtype="<u2").tobytes()
    indices = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    path = write_dicom(tmp_path / "p.dcm", indices, "PALETTE COLOR", BitsStored=16, HighBit=15, **lut)
    decoded = np.asarray(images.load_image(path))[0].astype(int)
    expected = np.asarray(
        Image.fromarray(
            np.array([[[0, 0, 0], [255, 255, 255], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8), mode="RGB"
        ).convert("L")
    )[0]
    assert list(decoded) == list(expected) and decoded[2] > 100


def test_dicom_ybr_becomes_its_luma_and_unknown_colour_space_is_refused(tmp_path: Path) -> None:
    ybr = np.dstack([np.full((2, 2), 200), np.full((2, 2), 128), np.full((2, 2), 128)])  # Y=200, no colour
    path = write_dicom(tmp_path / "y.dcm", ybr, "YBR_FULL", BitsAllocated=8, BitsStored=8, HighBit=7)
    assert np.all(np.abs(np.asarray(images.load_image(path)).astype(int) - 200) <= 1)
    path = write_dicom(tmp_path / "h.dcm", np.zeros((2, 2, 3)), "HSV")
    with pytest.raises(ImageDecodeError, match=r"h\.dcm: DICOM PhotometricInterpretation 'HSV' is not supported"):
        images.load_image(path)


def test_dicom_found_by_magic_without_suffix(tmp_path: Path) -> None:
    pixels = np.linspace(0, 4000, 16, dtype=np.uint16).reshape(4, 4)
    data = write_dicom(tmp_path / "a.dcm", pixels).read_bytes()
    assert images.load_image(data).mode == "L"


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_non_image_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=r"notes\.png: not a readable") as error:
        images.load_image(path)
    assert "BytesIO" not in str(error.value)  # no internal object in a message meant for the user


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


def test_decompression_bomb_is_refused_by_name(tmp_path: Path) -> None:
    bomb = tmp_path / "huge.png"
    synthetic.write_decompression_bomb(bomb)
    assert bomb.stat().st_size < 2_000
    with pytest.raises(ImageDecodeError, match=r"huge\.png: not decoded: Image size \(400000000 pixels\) exceeds"):
        images.load_image(bomb)
