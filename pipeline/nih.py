"""Read an NIH ChestX-ray14 download: the label CSV (2017 or 2020 format), the split lists, the image files.

Everything here validates as it reads: a bad file raises `NIHFormatError` naming the file, the line and what
was expected, because a silently mis-parsed row would become a wrong training label.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from pipeline.errors import UserError
from pipeline.labels import UnknownFindingError, parse_findings

logger = logging.getLogger(__name__)

# The 2020 revision fixes labels and ages, so it wins when a download holds both.
LABEL_CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
MAX_AGE_YEARS = 120
# CSV column (as NIH names it) -> Record field.
COLUMNS = {
    "Image Index": "image_id",
    "Finding Labels": "findings",
    "Follow-up #": "follow_up",
    "Patient ID": "patient_id",
    "Patient Age": "age_years",
    "Patient Gender": "sex",
    "View Position": "view_position",
}
SEXES = ("M", "F")
VIEW_POSITIONS = ("PA", "AP")
_AGE = re.compile(r"^([0-9]+)([YMD]?)$")


class NIHFormatError(UserError, ValueError):
    """An NIH file does not have the expected format; the message names the file and the line."""


@dataclass(frozen=True)
class Record:
    """One row of the label CSV, parsed."""

    image_id: str
    findings: tuple[str, ...]
    patient_id: int
    age_years: int | None
    sex: str
    view_position: str
    follow_up: int


@dataclass(frozen=True)
class NIHSource:
    """A parsed download: label rows by image name, the two official split lists, the image files on disk."""

    root: Path
    labels_csv: Path
    records: dict[str, Record]
    train_val: list[str]
    test: list[str]
    image_files: dict[str, Path]


def parse_age(text: str) -> int | None:
    """Age in whole years from `58` (2020 file) or `058Y`/`011M`/`001D` (2017 file); None when > 120 years.

    Months and days floor to 0 years. The 2017 file holds 16 impossible ages (148-414 years): they become
    None rather than a number a model could learn from.
    """
    match = _AGE.match(text.strip())
    if match is None:
        raise ValueError(f"age {text!r} is not a number of years like '58' or '058Y', '011M', '001D'")
    value, unit = int(match.group(1)), match.group(2) or "Y"
    years = {"Y": value, "M": value // 12, "D": value // 365}[unit]
    return None if years > MAX_AGE_YEARS else years


def check_image_name(name: str) -> str:
    """Return `name` if it is a bare file name; a path component (`../x.png`, `a/b.png`) is refused."""
    if not name or name in (".", "..") or PurePosixPath(name).name != name or PureWindowsPath(name).name != name:
        raise ValueError(f"image name {name!r} must be a bare file name without a folder")
    return name


def _find_file(root: Path, name: str, what: str, flag: str) -> Path | None:
    """`root/name`, else the one `root/*/name` (a download unpacked with its files in e.g. `metadata/`)."""
    if (root / name).is_file():
        return root / name
    candidates = sorted(path for path in root.glob(f"*/{name}") if path.is_file())
    if len(candidates) > 1:
        raise NIHFormatError(
            f"{root}: {len(candidates)} {what}s named {name}: {', '.join(map(str, candidates))}; pass {flag} to choose"
        )
    return candidates[0] if candidates else None


def _given_file(root: Path, given: Path, what: str) -> Path:
    """A file named on the command line; a bare name such as `test_list.txt` means the file in the NIH folder."""
    for candidate in (Path(given), root / given):
        if candidate.is_file():
            return candidate
    raise NIHFormatError(f"{given}: {what} not found (looked here and in {root})")


def find_labels_csv(root: Path, labels_csv: Path | None = None) -> Path:
    """The label CSV to use: `labels_csv` when given, else the v2020 file, else the 2017 file, each looked
    for in `root` and then one folder down."""
    if labels_csv is not None:
        return _given_file(root, labels_csv, "label CSV")
    for name in LABEL_CSV_NAMES:
        found = _find_file(root, name, "label CSV", "--labels-csv")
        if found is not None:
            return found
    raise NIHFormatError(
        f"{root}: no label CSV; expected {' or '.join(LABEL_CSV_NAMES)} in it or one folder down (or pass --labels-csv)"
    )


def find_split_list(root: Path, name: str, given: Path | None = None) -> Path:
    """The split list `name` (`train_val_list.txt`, `test_list.txt`): `given`, else in `root` or one folder down."""
    if given is not None:
        return _given_file(root, given, "split list")
    flag = "--train-val-list" if name == TRAIN_VAL_LIST else "--test-list"
    found = _find_file(root, name, "split list", flag)
    if found is None:
        raise NIHFormatError(f"{root}: no {name} in it or one folder down (or pass {flag})")
    return found


def read_text(path: Path) -> str:
    """A text file's content (UTF-8, BOM dropped); a non-UTF-8 byte or an unreadable file is one error
    naming the file, the line and the byte offset."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise NIHFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = len((data[:offset] + b".").splitlines())  # \n, \r\n and \r end a line, as for the CSV reader
        raise NIHFormatError(
            f"{path}, line {line}, byte {offset}: {data[offset : offset + 1]!r} is not UTF-8 "
            "(NIH's files are ASCII; save the file as UTF-8)"
        ) from exc


def _lines(text: str) -> io.StringIO:
    """Lines ending in \n, \r\n or \r only (`str.splitlines` would also split at \x85, \u2028…)."""
    return io.StringIO(text, newline="")


def _header_columns(header: list[str]) -> list[tuple[str, int]]:
    """(logical name, number of row fields) for each header column.

    NIH's header writes `OriginalImage[Width,Height]` unquoted, so a CSV reader splits it in two pieces,
    while each row holds two values for it: the pieces are joined back and the column spans two fields.
    The 2017 header's trailing comma gives an empty last field that no row fills: it is dropped.
    """
    while header and not header[-1].strip():
        header = header[:-1]
    columns: list[tuple[str, int]] = []
    pending: list[str] = []
    for field in header:
        pending.append(field.strip())
        if "[" in pending[0] and "]" not in field:
            continue
        name = ",".join(pending)
        width = name.count(",") + 1 if "[" in name else 1
        columns.append((name, width))
        pending = []
    if pending:
        columns.append((",".join(pending), len(pending)))
    return columns


def _column_offsets(path: Path, header: list[str]) -> tuple[dict[str, int], int]:
    """Field index of each required column, and the number of fields a row must have."""
    offsets: dict[str, int] = {}
    position = 0
    for name, width in _header_columns(header):
        offsets.setdefault(name, position)
        position += width
    missing = [name for name in COLUMNS if name not in offsets]
    if missing:
        raise NIHFormatError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the header has {', '.join(map(repr, offsets))}"
        )
    return {name: offsets[name] for name in COLUMNS}, position


def _parse_row(fields: list[str], offsets: dict[str, int]) -> Record:
    value = {column: fields[offset].strip() for column, offset in offsets.items()}
    for column, allowed in (("Patient Gender", SEXES), ("View Position", VIEW_POSITIONS)):
        if value[column] not in allowed:
            raise ValueError(f"{column} {value[column]!r} is not one of {', '.join(allowed)}")
    for column in ("Patient ID", "Follow-up #"):
        if not (value[column].isascii() and value[column].isdigit()):
            raise ValueError(f"{column} {value[column]!r} is not a whole number")
    return Record(
        image_id=check_image_name(value["Image Index"]),
        findings=tuple(parse_findings(value["Finding Labels"])),
        patient_id=int(value["Patient ID"]),
        age_years=parse_age(value["Patient Age"]),
        sex=value["Patient Gender"],
        view_position=value["View Position"],
        follow_up=int(value["Follow-up #"]),
    )


def read_labels_csv(path: Path) -> dict[str, Record]:
    """Parse `Data_Entry_2017.csv` or `Data_Entry_2017_v2020.csv` (any line endings) into records by image name."""
    path = Path(path)
    records: dict[str, Record] = {}
    lines: dict[str, int] = {}
    with _lines(read_text(path)) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise NIHFormatError(f"{path}: empty file; expected a header line with {', '.join(COLUMNS)}")
        offsets, n_fields = _column_offsets(path, header)
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            where = f"{path}, line {reader.line_num}"
            while len(fields) > n_fields and not fields[-1].strip():
                fields = fields[:-1]
            if len(fields) != n_fields:
                raise NIHFormatError(f"{where}: {len(fields)} fields, expected {n_fields} as the header says")
            try:
                record = _parse_row(fields, offsets)
            except (UnknownFindingError, ValueError) as exc:
                raise NIHFormatError(f"{where}: {exc}") from exc
            if record.image_id in records:
                raise NIHFormatError(
                    f"{where}: duplicate image {record.image_id!r} (first on line {lines[record.image_id]})"
                )
            records[record.image_id] = record
            lines[record.image_id] = reader.line_num
    return records


def read_split_list(path: Path) -> list[str]:
    """Image names of an official split list (one per line, any line endings, final newline optional)."""
    path = Path(path)
    if not path.is_file():
        raise NIHFormatError(f"{path}: split list not found")
    names: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_lines(read_text(path)), start=1):
        name = line.strip()
        if not name:
            continue
        try:
            check_image_name(name)
        except ValueError as exc:
            raise NIHFormatError(f"{path}, line {number}: {exc}") from exc
        if name in seen:
            raise NIHFormatError(f"{path}, line {number}: duplicate image {name!r} (first on line {seen[name]})")
        seen[name] = number
        names.append(name)
    return names


def find_image_files(root: Path) -> dict[str, Path]:
    """PNG files by name, from the official layout (`images_001/images/`…) and/or a flat `images/` folder."""
    files: dict[str, Path] = {}
    for path in sorted([*root.glob("images_*/images/*.png"), *root.glob("images/*.png")]):
        if path.name in files:
            raise NIHFormatError(f"duplicate image {path.name!r}: {files[path.name]} and {path}")
        files[path.name] = path
    if not files:
        raise NIHFormatError(
            f"{root}: no PNG images; expected images_001/images/*.png … images_012/images/*.png or images/*.png"
        )
    return files


def _check_names_in_csv(names: Iterable[str], records: dict[str, Record], list_path: Path, csv_path: Path) -> None:
    missing = [name for name in names if name not in records]
    if missing:
        raise NIHFormatError(
            f"{list_path}: {len(missing)} image(s) not in {csv_path.name}, e.g. {', '.join(missing[:5])}"
        )


def load_source(
    root: Path, labels_csv: Path | None = None, train_val_list: Path | None = None, test_list: Path | None = None
) -> NIHSource:
    """Read and cross-check a download: labels, split lists and images must name the same files.

    Each file not given is looked for in `root`, then one folder down (`metadata/…`) when only one is there.
    """
    root = Path(root)
    if not root.is_dir():
        raise NIHFormatError(f"{root}: NIH root folder not found")
    csv_path = find_labels_csv(root, labels_csv)
    train_val_path = find_split_list(root, TRAIN_VAL_LIST, train_val_list)
    test_path = find_split_list(root, TEST_LIST, test_list)
    records = read_labels_csv(csv_path)
    train_val = read_split_list(train_val_path)
    test = read_split_list(test_path)
    _check_names_in_csv(train_val, records, train_val_path, csv_path)
    _check_names_in_csv(test, records, test_path, csv_path)
    both = set(train_val) & set(test)
    if both:
        raise NIHFormatError(f"{len(both)} image(s) in both {train_val_path} and {test_path}, e.g. {sorted(both)[:5]}")
    shared = sorted({records[n].patient_id for n in train_val} & {records[n].patient_id for n in test})
    if shared:
        raise NIHFormatError(
            f"{len(shared)} patient(s) have images in both {train_val_path} and {test_path}, "
            f"e.g. patient {', '.join(map(str, shared[:5]))}; a patient must be in one split only"
        )
    unlisted = len(records) - len(train_val) - len(test)
    if unlisted:
        logger.warning("%d row(s) of %s are in neither split list; they are skipped", unlisted, csv_path.name)
    image_files = find_image_files(root)
    unlabelled = sorted(set(image_files) - set(records))
    if unlabelled:
        logger.warning(
            "%d image(s) on disk have no row in %s and are skipped, e.g. %s",
            len(unlabelled),
            csv_path.name,
            ", ".join(unlabelled[:5]),
        )
    return NIHSource(root, csv_path, records, train_val, test, image_files)


def split_by_patient(
    names: Sequence[str], records: dict[str, Record], validation_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split `names` into (train, validation) so that no patient is in both; deterministic for a seed.

    `validation_fraction` of the patients (at least one when > 0) go to validation; with NIH's ~3 images
    per patient that is close to the same fraction of images. Names keep their order within each split.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction {validation_fraction} must be in [0, 1)")
    patients = sorted({records[name].patient_id for name in names})
    random.Random(seed).shuffle(patients)
    n_validation = round(validation_fraction * len(patients))
    if validation_fraction > 0 and len(patients) > 1:
        n_validation = min(max(n_validation, 1), len(patients) - 1)
    validation_patients = set(patients[:n_validation])
    train = [name for name in names if records[name].patient_id not in validation_patients]
    validation = [name for name in names if records[name].patient_id in validation_patients]
    return train, validation
