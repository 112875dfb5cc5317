"""Property-based test of the NIH label CSV and split-list readers (hypothesis, derandomized).

Every generated file either reads to exactly the labels it was generated from, or raises one `NIHFormatError`
of one line that names the file and the first bad line. The expected outcome comes from the generator's own
values (which field is bad, where a byte was inserted), never from parsing the text the reader sees.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline import nih
from pipeline.labels import FINDINGS

FUZZ = settings(
    derandomize=True, max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
]
TAIL_HEADER = ["OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
TAIL_VALUES = ["2500", "2048", "0.143", "0.143"]
BAD = {  # values the reader must refuse, per column
    "Image Index": ["../x.png", "a/b.png", "c\\d.png", "..", "", "."],
    "Finding Labels": ["Pneumonitis", "Mass||Nodule", "No Finding|Mass", "mass", "", "|"],
    "Follow-up #": ["-1", "x", "1.5", "", "²", "٣"],
    "Patient ID": ["-1", "x", "1e3", "", "²", "٣"],
    "Patient Age": ["abc", "-3", "12W", "", "58 years", "٣٣"],
    "Patient Gender": ["X", "m", "", "MF", "é"],
    "View Position": ["LL", "pa", "", "P A"],
}
BAD_NAMES = ["../x.png", "a/b.png", "c\\d.png", "..", "."]
ENDINGS = ["\n", "\r\n", "\r"]
NOT_UTF8 = [b"\xff", b"\xe9", b"\xc3(", b"\x80"]


@dataclass
class Case:
    data: bytes
    expected: dict | None  # the records, or None when an error is expected
    error_line: int | None  # the line the error must name (None: the error names no line, e.g. the header)
    error_byte: int | None = None  # the offset of a byte that is not UTF-8


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of byte `offset`, counting \\r\\n, \\r and \\n as line ends, by hand."""
    line, i = 1, 0
    while i < offset:
        if data[i : i + 2] == b"\r\n" and i + 1 < offset:
            i += 2
            line += 1
            continue
        if data[i : i + 1] in (b"\r", b"\n"):
            line += 1
        i += 1
    return line


def _with_bad_byte(draw, data: bytes) -> Case:
    """`data` (ASCII after any BOM) with a byte sequence that is not UTF-8 inserted after the BOM."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    offset = draw(st.integers(bom, len(data)))
    data = data[:offset] + draw(st.sampled_from(NOT_UTF8)) + data[offset:]
    return Case(data, None, _line_of(data, offset), offset)


def _encode(draw, lines: list[str]) -> bytes:
    """Lines joined by one of NIH's line endings, maybe a final newline, maybe a UTF-8 BOM."""
    ending = draw(st.sampled_from(ENDINGS))
    text = ending.join(lines) + (ending if draw(st.booleans()) else "")
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode()


def _age_text(draw, csv_format: str) -> tuple[str, int | None]:
    if csv_format == "2020":
        years = draw(st.integers(0, 414))
        return str(years), years if years <= 120 else None
    value, unit = draw(st.integers(0, 999)), draw(st.sampled_from("YMD"))
    years = {"Y": value, "M": value // 12, "D": value // 365}[unit]
    return f"{value:03d}{unit}", years if years <= 120 else None


def _row(draw, csv_format: str, image: str) -> tuple[dict[str, str], nih.Record]:
    """The values of one valid row (as the file spells them) and the record they mean."""
    patient, follow_up = int(image[:8]), int(image[9:12])
    findings = draw(st.lists(st.sampled_from([*FINDINGS, "Infiltrate"]), max_size=4))
    age_text, years = _age_text(draw, csv_format)
    sex, view = draw(st.sampled_from("MF")), draw(st.sampled_from(["PA", "AP"]))
    padded = csv_format == "2017"
    values = {
        "Image Index": image,
        "Finding Labels": "|".join(findings) or "No Finding",
        "Follow-up #": f"{follow_up:03d}" if padded else str(follow_up),
        "Patient ID": f"{patient:08d}" if padded else str(patient),
        "Patient Age": age_text,
        "Patient Gender": sex,
        "View Position": view,
    }
    if draw(st.integers(0, 5)) == 0:  # spaces around a value are not part of it
        column = draw(st.sampled_from(COLUMNS))
        values[column] = f" {values[column]}  "
    present = {{"Infiltrate": "Infiltration"}.get(name, name) for name in findings}
    findings_in_order = tuple(name for name in FINDINGS if name in present)
    return values, nih.Record(image, findings_in_order, patient, years, sex, view, follow_up)


IMAGE_NAMES = st.builds(
    lambda patient, follow_up: f"{patient:08d}_{follow_up:03d}.png", st.integers(1, 30), st.integers(0, 5)
)
FAULTS = [None] * 4 + ["value", "shape", "duplicate", "byte", "column"]


@st.composite
def label_csvs(draw) -> Case:
    """A valid 2017 or 2020 file (columns in any order, blank lines, padding, trailing commas, any line
    ending, BOM or not), or the same with one fault: a bad value, a row one field short or long, a duplicate
    image, a byte that is not UTF-8, a renamed column."""
    csv_format = draw(st.sampled_from(["2017", "2020"]))
    order = draw(st.permutations(COLUMNS))
    images = draw(st.lists(IMAGE_NAMES, max_size=10, unique=True))
    fault = draw(st.sampled_from(FAULTS))
    faulty_row = draw(st.integers(0, len(images) - 1)) if images and fault in ("value", "shape", "duplicate") else -1
    header = [*order, *TAIL_HEADER] + ([""] if csv_format == "2017" else [])
    if fault == "column":
        header[draw(st.integers(0, len(COLUMNS) - 1))] = "Renamed"
    lines, expected, error_line = [",".join(header)], {}, None
    for index, image in enumerate(images):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", " ", ",,,", " , "])))  # blank lines are skipped
        if index == faulty_row and fault == "duplicate" and index > 0:
            image = images[draw(st.integers(0, index - 1))]
        values, record = _row(draw, csv_format, image)
        fields = [values[column] for column in order] + TAIL_VALUES
        if draw(st.integers(0, 3)) == 0:
            fields.append("")  # a trailing comma
        if index == faulty_row and fault == "value":
            column = draw(st.sampled_from(COLUMNS))
            fields[order.index(column)] = draw(st.sampled_from(BAD[column]))
        if index == faulty_row and fault == "shape":
            fields = draw(st.sampled_from([fields[: len(COLUMNS) + 3], [*fields, "7"]]))
        lines.append(",".join(fields))
        if index == faulty_row and (fault != "duplicate" or index > 0):
            error_line = len(lines)
        expected[image] = record
    data = _encode(draw, lines)
    if fault == "byte":
        return _with_bad_byte(draw, data)
    if fault == "column" or error_line is not None:
        return Case(data, None, error_line)
    return Case(data, expected, None)


@st.composite
def split_lists(draw) -> Case:
    """A valid list (blank lines, padding, any line ending, BOM or not), or one with a bad name, a
    duplicate or a byte that is not UTF-8."""
    names = draw(st.lists(IMAGE_NAMES, max_size=15, unique=True))
    fault = draw(st.sampled_from([None] * 3 + ["bad name", "duplicate", "byte"]))
    faulty = draw(st.integers(0, len(names) - 1)) if names and fault in ("bad name", "duplicate") else -1
    lines, error_line = [], None
    for index, name in enumerate(names):
        if draw(st.integers(0, 7)) == 0:
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
        if index == faulty and fault == "bad name":
            name = draw(st.sampled_from(BAD_NAMES))
        if index == faulty and fault == "duplicate" and index > 0:
            name = names[draw(st.integers(0, index - 1))]
        lines.append(f"  {name}\t" if draw(st.integers(0, 7)) == 0 else name)
        if index == faulty and (fault != "duplicate" or index > 0):
            error_line = len(lines)
    data = _encode(draw, lines)
    if fault == "byte":
        return _with_bad_byte(draw, data)
    return Case(data, None if error_line else names, error_line)


def _check(read, case: Case, path: Path) -> None:
    path.write_bytes(case.data)
    if case.expected is not None:
        event(f"exact, {min(len(case.expected), 5)}+ rows")
        assert read(path) == case.expected
        return
    event("error, naming the line" if case.error_line else "error, naming no line")
    with pytest.raises(nih.NIHFormatError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    if case.error_byte is not None:
        assert message.startswith(f"{path}, line {case.error_line}, byte {case.error_byte}: "), message
    elif case.error_line is not None:
        assert message.startswith(f"{path}, line {case.error_line}: "), message


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@FUZZ
@given(case=label_csvs())
def test_label_csv_is_exact_or_one_line_naming_the_first_bad_line(scratch: Path, case: Case) -> None:
    _check(nih.read_labels_csv, case, scratch / "Data_Entry_2017.csv")


@FUZZ
@given(case=split_lists())
def test_split_list_is_exact_or_one_line_naming_the_first_bad_line(scratch: Path, case: Case) -> None:
    _check(nih.read_split_list, case, scratch / "test_list.txt")
