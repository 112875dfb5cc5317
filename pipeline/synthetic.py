"""Generate NIH-format test data: the folder tree, both label CSV formats with their quirks, split lists.

Each image carries a planted, learnable signal: a bright blob at a finding-specific cell of a 4x4 grid
(visible after resizing to 32 px), so a tiny model can reach a high AUROC in seconds and a training test
can tell learning from noise. Also helpers that break a tree on purpose, for the converter's error tests.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipeline.labels import FINDINGS, NO_FINDING

# NIH's file names (pipeline.nih reads them; it is not imported here, being in the same layer).
CSV_2017, CSV_2020 = "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
GRID = 4
BLOB_RADIUS = 0.07  # of the image side
IMAGE_MODES = ("L", "RGBA", "I;16")


@dataclass(frozen=True)
class SyntheticRow:
    """One generated image and its metadata (both age spellings: the 2017 file's and the 2020 file's)."""

    image_id: str
    findings: tuple[str, ...]
    patient_id: int
    follow_up: int
    age_2017: str
    age_2020: int
    sex: str
    view_position: str
    mode: str


@dataclass(frozen=True)
class SyntheticTree:
    root: Path
    rows: list[SyntheticRow]
    train_val: list[str]
    test: list[str]


def signal_center(finding: str) -> tuple[float, float]:
    """Relative (x, y) of the blob that marks `finding`: its cell of a 4x4 grid, row by row."""
    index = FINDINGS.index(finding)
    return ((index % GRID) + 0.5) / GRID, ((index // GRID) + 0.5) / GRID


def make_pixels(findings: Sequence[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit pixels: a dim noisy gradient, plus one bright blob per finding at its grid cell."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = 60 + 40 * yy + rng.normal(0, 10, (size, size))
    for finding in findings:
        cx, cy = signal_center(finding)
        cx, cy = cx + rng.uniform(-0.02, 0.02), cy + rng.uniform(-0.02, 0.02)
        pixels += 110 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (BLOB_RADIUS / 2) ** 2))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def save_image(pixels: np.ndarray, path: Path, mode: str) -> None:
    """Write 8-bit `pixels` as a PNG in `mode`: L; RGBA with R=G=B and opaque alpha (as NIH's);
    I;16 holding 12-bit values, x16, with an `sBIT` chunk saying 12 (clipping to 8 bits would make them
    white; scaling by the 12-bit depth recovers them)."""
    info = PngInfo()
    if mode == "L":
        image = Image.fromarray(pixels, mode="L")
    elif mode == "RGBA":
        image = Image.fromarray(np.dstack([pixels, pixels, pixels, np.full_like(pixels, 255)]), mode="RGBA")
    elif mode == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16) * 16)
        info.add(b"sBIT", bytes([12]))
    else:
        raise ValueError(f"unsupported mode {mode!r}; expected one of {IMAGE_MODES}")
    image.save(path, format="PNG", pnginfo=info)


def _age_2017(rng: random.Random, years: int, index: int) -> str:
    """The 2017 file's age spelling, with its quirks: months (under and over a year, as NIH's `011M` and
    `018M`), days and impossible ages now and then."""
    if index % 23 == 5:
        return f"{rng.randint(1, 11) if index % 2 else rng.randint(12, 23):03d}M"
    if index % 37 == 7:
        return f"{rng.randint(1, 30):03d}D"
    if index % 41 == 11:
        return f"{rng.choice([148, 155, 411, 414])}Y"
    return f"{years:03d}Y"


def make_rows(
    n_images: int, seed: int = 0, finding_probability: float = 0.12, modes: Sequence[str] = IMAGE_MODES
) -> list[SyntheticRow]:
    """Metadata for `n_images` images of patients with 1-4 follow-ups each; every 4th image not in `L`."""
    rng = random.Random(seed)
    rows: list[SyntheticRow] = []
    patient = 0
    while len(rows) < n_images:
        patient += rng.randint(1, 3)
        years, sex = rng.randint(1, 95), rng.choice(["M", "F"])
        for follow_up in range(min(rng.randint(1, 4), n_images - len(rows))):
            index = len(rows)
            findings = tuple(f for f in FINDINGS if rng.random() < finding_probability)
            mode = modes[(index // 4) % len(modes)] if index % 4 == 3 else modes[0]
            rows.append(
                SyntheticRow(
                    image_id=f"{patient:08d}_{follow_up:03d}.png",
                    findings=findings,
                    patient_id=patient,
                    follow_up=follow_up,
                    age_2017=_age_2017(rng, years, index),
                    age_2020=years,
                    sex=sex,
                    view_position=rng.choice(["PA", "AP"]),
                    mode=mode,
                )
            )
    return rows


def write_labels_csv(path: Path, rows: Sequence[SyntheticRow], csv_format: str) -> None:
    """Write rows as NIH's `2017` file (CRLF, trailing header comma, `058Y` ages, zero padding) or `2020` file."""
    header = (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    lines = [header + ("," if csv_format == "2017" else "")]
    for row in rows:
        labels = "|".join(row.findings) or NO_FINDING
        if csv_format == "2017":
            ids, age = f"{row.follow_up:03d},{row.patient_id:08d}", row.age_2017
        elif csv_format == "2020":
            ids, age = f"{row.follow_up},{row.patient_id}", str(row.age_2020)
        else:
            raise ValueError(f"csv_format {csv_format!r}; expected '2017' or '2020'")
        lines.append(f"{row.image_id},{labels},{ids},{age},{row.sex},{row.view_position},2500,2048,0.143,0.143")
    newline = "\r\n" if csv_format == "2017" else "\n"
    path.write_bytes((newline.join(lines) + newline).encode())


def write_split_list(path: Path, names: Sequence[str]) -> None:
    """One name a line and, as NIH's lists, no final newline."""
    path.write_text("\n".join(names))


def generate_nih_tree(
    root: Path,
    n_images: int = 60,
    image_size: int = 64,
    layout: str = "official",
    csv_formats: Sequence[str] = ("2020",),
    test_fraction: float = 0.25,
    seed: int = 0,
    modes: Sequence[str] = IMAGE_MODES,
) -> SyntheticTree:
    """Write an NIH-like download under `root`: images (official `images_00k/images/` or flat `images/`
    layout), the label CSV(s) in `csv_formats` ("2017", "2020"), and patient-disjoint split lists."""
    if layout not in ("official", "flat"):
        raise ValueError(f"layout {layout!r}; expected 'official' or 'flat'")
    root = Path(root)
    rows = make_rows(n_images, seed=seed, modes=modes)
    pixel_rng = np.random.default_rng(seed)
    per_folder = math.ceil(len(rows) / 3)
    for index, row in enumerate(rows):
        folder = root / (f"images_{index // per_folder + 1:03d}/images" if layout == "official" else "images")
        folder.mkdir(parents=True, exist_ok=True)
        save_image(make_pixels(row.findings, image_size, pixel_rng), folder / row.image_id, row.mode)
    for csv_format in csv_formats:
        write_labels_csv(root / (CSV_2017 if csv_format == "2017" else CSV_2020), rows, csv_format)
    patients = sorted({row.patient_id for row in rows})
    random.Random(seed).shuffle(patients)
    test_patients = set(patients[: max(1, round(test_fraction * len(patients)))])
    test = sorted(row.image_id for row in rows if row.patient_id in test_patients)
    train_val = sorted(row.image_id for row in rows if row.patient_id not in test_patients)
    write_split_list(root / TRAIN_VAL_LIST, train_val)
    write_split_list(root / TEST_LIST, test)
    return SyntheticTree(root, rows, train_val, test)


def truncate_file(path: Path, keep_fraction: float = 0.5) -> None:
    """Cut a file (e.g. a PNG) short, as an interrupted download would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])


def _rewrite_lines(path: Path, edit) -> None:
    lines = Path(path).read_bytes().decode().splitlines(keepends=True)
    Path(path).write_bytes("".join(edit(lines)).encode())


def replace_in_header(path: Path, old: str, new: str) -> None:
    """Replace text in a CSV's header line (rename or drop a column)."""
    _rewrite_lines(path, lambda lines: [lines[0].replace(old, new), *lines[1:]])


def replace_in_row(path: Path, image_id: str, old: str, new: str) -> None:
    """Replace text in the CSV row of `image_id` (a bad label, age, name…)."""
    _rewrite_lines(
        path, lambda lines: [line.replace(old, new) if line.startswith(f"{image_id},") else line for line in lines]
    )


def duplicate_row(path: Path, image_id: str) -> None:
    """Repeat the CSV row of `image_id` at the end of the file."""

    def edit(lines: list[str]) -> list[str]:
        row = next(line for line in lines if line.startswith(f"{image_id},"))
        ending = row[len(row.rstrip("\r\n")) :] or "\n"
        last = lines[-1] if lines[-1].endswith(("\n", "\r")) else lines[-1] + ending
        return [*lines[:-1], last, row.rstrip("\r\n") + ending]

    _rewrite_lines(path, edit)


def write_decompression_bomb(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims `side` x `side` pixels (over Pillow's bomb limit at 20000), in a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\0" * (side + 1) * 4)  # a few rows: Pillow refuses on the header alone
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
