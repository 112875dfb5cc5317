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
    derandomize=True, max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
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


def _with_bad_byte(draw, case: Case, messy: bool) -> Case:
    """Maybe insert a byte sequence that is not UTF-8 (after the BOM): then its line is the error, whatever else."""
    if not messy or draw(st.integers(0, 3)) != 0:
        return case
    bom = 3 if case.data.startswith(b"\xef\xbb\xbf") else 0
    offset = draw(st.integers(bom, len(case.data)))
    data = case.data[:offset] + draw(st.sampled_from(NOT_UTF8)) + case.data[offset:]
    return Case(data, None, _line_of(data, offset))


def _age_text(draw, csv_format: str) -> tuple[str, int | None]:
    if csv_format == "2020":
        years = draw(st.integers(0, 414))
        return str(years), years if years <= 120 else None
    value, unit = draw(st.integers(0, 999)), draw(st.sampled_from("YMD"))
    years = {"Y": value, "M": value // 12, "D": value // 365}[unit]
    return f"{value:03d}{unit}", years if years <= 120 else None


@st.composite
def label_csvs(draw) -> Case:
    csv_format = draw(st.sampled_from(["2017", "2020"]))
    messy = draw(st.booleans())  # else a valid file, in any of the valid shapes
    order = draw(st.permutations(COLUMNS))
    ending = draw(st.sampled_from(ENDINGS))
    header = [*order, *TAIL_HEADER] + ([""] if csv_format == "2017" else [])
    missing_column = messy and draw(st.integers(0, 7)) == 0
    if missing_column:
        header[draw(st.integers(0, len(COLUMNS) - 1))] = "Renamed"
    lines, expected, error_line = [",".join(header)], {}, None
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", " ", ",,,", " , "])))  # blank lines are skipped
        patient, follow_up = draw(st.integers(1, 20)), draw(st.integers(0, 4))
        findings = draw(st.lists(st.sampled_from([*FINDINGS, "Infiltrate"]), max_size=4))
        age_text, years = _age_text(draw, csv_format)
        sex, view = draw(st.sampled_from("MF")), draw(st.sampled_from(["PA", "AP"]))
        padded = csv_format == "2017"
        values = {
            "Image Index": f"{patient:08d}_{follow_up:03d}.png",
            "Finding Labels": "|".join(findings) or "No Finding",
            "Follow-up #": f"{follow_up:03d}" if padded else str(follow_up),
            "Patient ID": f"{patient:08d}" if padded else str(patient),
            "Patient Age": age_text,
            "Patient Gender": sex,
            "View Position": view,
        }
        bad_column = draw(st.sampled_from([*COLUMNS, *[None] * 25])) if messy else None
        if bad_column is not None:
            values[bad_column] = draw(st.sampled_from(BAD[bad_column]))
        if draw(st.integers(0, 5)) == 0:  # spaces around a value are not part of it
            column = draw(st.sampled_from(COLUMNS))
            values[column] = f" {values[column]}  "
        fields = [values[column] for column in order] + TAIL_VALUES
        shapes = ["ok"] * 3 + ["trailing comma"] + (["one field short", "one field more"] if messy else [])
        shape = draw(st.sampled_from(shapes))
        fields = {
            "ok": fields,
            "trailing comma": [*fields, ""],
            "one field short": fields[:-1],
            "one field more": [*fields, "7"],
        }[shape]
        image = values["Image Index"].strip()
        if image in expected and not messy:
            continue
        lines.append(",".join(fields))
        bad = bad_column is not None or shape in ("one field short", "one field more") or image in expected
        if error_line is None and bad:
            error_line = len(lines)
        if error_line is None:
            canonical = {"Infiltrate": "Infiltration"}
            present = {canonical.get(name, name) for name in findings}
            expected[image] = nih.Record(
                image_id=image,
                findings=tuple(name for name in FINDINGS if name in present),
                patient_id=patient,
                age_years=years,
                sex=sex,
                view_position=view,
                follow_up=follow_up,
            )
    text = ending.join(lines) + (ending if draw(st.booleans()) else "")
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode()
    if missing_column:
        case = Case(data, None, None)
    else:
        case = Case(data, expected if error_line is None else None, error_line)
    return _with_bad_byte(draw, case, messy)


@st.composite
def split_lists(draw) -> Case:
    ending = draw(st.sampled_from(ENDINGS))
    messy = draw(st.booleans())
    lines, names, error_line = [], [], None
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["name"] * 8 + ["blank", "padded"] + (["bad"] if messy else [])))
        name = f"{draw(st.integers(1, 9)):08d}_{draw(st.integers(0, 2)):03d}.png"
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
            continue
        if kind == "bad":
            name = draw(st.sampled_from(BAD_NAMES))
        elif name in names and not messy:
            continue
        lines.append(f"  {name}\t" if kind == "padded" else name)
        if error_line is None and (kind == "bad" or name in names):
            error_line = len(lines)
        names.append(name)
    text = ending.join(lines) + (ending if draw(st.booleans()) else "")
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode()
    return _with_bad_byte(draw, Case(data, names if error_line is None else None, error_line), messy)


def _check(read, case: Case, path: Path) -> None:
    path.write_bytes(case.data)
    if case.expected is not None and case.error_line is None:
        event(f"exact, {min(len(case.expected), 5)}+ rows")
        assert read(path) == case.expected
        return
    event("error, naming the line" if case.error_line else "error, naming no line")
    with pytest.raises(nih.NIHFormatError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    if case.error_line is not None:
        assert message.startswith(f"{path}, line {case.error_line}:") or message.startswith(
            f"{path}, line {case.error_line}, byte "
        ), message


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
