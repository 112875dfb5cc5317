"""Reading NIH label CSVs, split lists and image folders (pipeline.nih), checked against independent parses."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import nih, synthetic
from pipeline.labels import FINDINGS
from pipeline.nih import NIHFormatError


def parse_2017_by_hand(path: Path) -> dict[str, tuple[list[str], int, int | None]]:
    """Independent parse of the 2017 file by string splitting: image -> (findings, patient, age)."""
    text = path.read_bytes().decode()
    rows = {}
    for line in text.split("\r\n")[1:]:
        if not line:
            continue
        fields = line.split(",")
        age_text = fields[4]
        value, unit = int(age_text[:-1]), age_text[-1]
        years = {"Y": value, "M": value // 12, "D": value // 365}[unit]
        findings = [] if fields[1] == "No Finding" else sorted(fields[1].split("|"))
        rows[fields[0]] = (findings, int(fields[3]), None if years > 120 else years)
    return rows


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("058Y", 58),
        ("011M", 0),
        ("018M", 1),
        ("001D", 0),
        ("65", 65),
        ("0", 0),
        ("120", 120),
        ("148Y", None),
        ("414Y", None),
    ],
)
def test_parse_age(text: str, years: int | None) -> None:
    assert nih.parse_age(text) == years


@pytest.mark.parametrize("text", ["", "abc", "58 years", "-3", "12W", "٣٣", "5²"])  # ASCII digits only
def test_parse_age_rejects_non_ages(text: str) -> None:
    with pytest.raises(ValueError, match="age"):
        nih.parse_age(text)


def test_sample_2017_csv_matches_string_parse(sample_nih_root: Path) -> None:
    path = sample_nih_root / "Data_Entry_2017.csv"
    records = nih.read_labels_csv(path)
    expected = parse_2017_by_hand(path)
    assert list(records) == list(expected)
    for name, (findings, patient, age) in expected.items():
        assert sorted(records[name].findings) == findings
        assert (records[name].patient_id, records[name].age_years) == (patient, age)


def test_sample_v2020_csv_matches_pandas(sample_nih_root: Path) -> None:
    path = sample_nih_root / "Data_Entry_2017_v2020.csv"
    records = nih.read_labels_csv(path)
    frame = pd.read_csv(path, index_col=False)
    assert len(records) == len(frame)
    for row in frame.itertuples(index=False):
        record = records[row[0]]
        assert record.patient_id == row[3] and record.age_years == row[4] and record.follow_up == row[2]
        assert (record.sex, record.view_position) == (row[5], row[6])
        assert set(record.findings) == (set() if row[1] == "No Finding" else set(row[1].split("|")))


def test_generated_2017_quirks_parse(nih_tree: synthetic.SyntheticTree) -> None:
    """Generated 2017 file (CRLF, trailing comma, M/D/impossible ages) agrees with the hand parse."""
    path = nih_tree.root / synthetic.CSV_2017
    expected = parse_2017_by_hand(path)
    records = nih.read_labels_csv(path)
    assert any(age is None for _, _, age in expected.values())
    months = [int(row.age_2017[:-1]) for row in nih_tree.rows if row.age_2017.endswith("M")]
    assert min(months) < 12 <= max(months)  # NIH's 2017 file has both 011M and 013M-023M
    assert any(row.age_2017.endswith("D") for row in nih_tree.rows)
    assert {k: (sorted(r.findings), r.patient_id, r.age_years) for k, r in records.items()} == expected


def test_quoted_bracket_header_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        '"OriginalImage[Width,Height]","OriginalImagePixelSpacing[x,y]"\n'
        "00000001_000.png,Hernia|Mass,2,1,58,M,AP,2500,2048,0.14,0.14"
    )
    record = nih.read_labels_csv(path)["00000001_000.png"]
    assert (record.findings, record.follow_up, record.age_years) == (("Hernia", "Mass"), 2, 58)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p, r: synthetic.replace_in_header(p, "Patient Age", "Age"), r"missing column\(s\) 'Patient Age'"),
        (
            lambda p, r: synthetic.replace_in_row(p, r.image_id, f"{r.image_id},", "../x.png,"),
            r"line 2: image name '\.\./x\.png'",
        ),
        (lambda p, r: synthetic.duplicate_row(p, r.image_id), r"duplicate image '\d+_000.png' \(first on line 2\)"),
        (
            lambda p, r: synthetic.replace_in_row(p, r.image_id, f",{r.view_position},", ",XX,"),
            "line 2: View Position 'XX' is not one of PA, AP",
        ),
        (lambda p, r: synthetic.replace_in_row(p, r.image_id, ",2500,", ","), "line 2: 10 fields, expected 11"),
        (lambda p, r: synthetic.replace_in_row(p, r.image_id, f",{r.age_2017},", ",old,"), "line 2: age 'old'"),
        (  # an Arabic-Indic digit: int() would read it as 3
            lambda p, r: synthetic.replace_in_row(p, r.image_id, f",{r.patient_id:08d},", ",\u0663,"),
            "line 2: Patient ID '\u0663' is not a whole number",
        ),
        (
            lambda p, r: synthetic.replace_in_row(p, r.image_id, f",{r.follow_up:03d},", ",\u00b2,"),
            "line 2: Follow-up # '\u00b2' is not a whole number",
        ),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, edit, message: str) -> None:
    rows = synthetic.make_rows(5)
    path = tmp_path / "Data_Entry_2017.csv"
    synthetic.write_labels_csv(path, rows, "2017")
    edit(path, rows[0])
    with pytest.raises(NIHFormatError, match=message) as info:
        nih.read_labels_csv(path)
    assert str(path) in str(info.value)


def test_unknown_finding_names_file_line_and_expected(tmp_path: Path) -> None:
    rows = synthetic.make_rows(4)
    path = tmp_path / "labels.csv"
    synthetic.write_labels_csv(path, rows, "2020")
    labels = "|".join(rows[2].findings) or "No Finding"
    synthetic.replace_in_row(path, rows[2].image_id, f",{labels},", ",Pneumonitis,")
    with pytest.raises(NIHFormatError, match=r"line 4: unknown finding 'Pneumonitis'; expected one of: Atelectasis"):
        nih.read_labels_csv(path)


def test_find_labels_csv_prefers_v2020(sample_nih_root: Path, tmp_path: Path) -> None:
    assert nih.find_labels_csv(sample_nih_root).name == "Data_Entry_2017_v2020.csv"
    shutil.copy(sample_nih_root / "Data_Entry_2017.csv", tmp_path)
    assert nih.find_labels_csv(tmp_path).name == "Data_Entry_2017.csv"
    chosen = nih.find_labels_csv(sample_nih_root, sample_nih_root / "Data_Entry_2017.csv")
    assert chosen.name == "Data_Entry_2017.csv"
    with pytest.raises(NIHFormatError, match="no label CSV"):
        nih.find_labels_csv(tmp_path / "nothing")


def test_read_split_list(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"a.png\r\nb.png\r\n\r\nc.png")
    assert nih.read_split_list(path) == ["a.png", "b.png", "c.png"]
    path.write_text("a.png\nsub/b.png")
    with pytest.raises(NIHFormatError, match=r"line 2: image name 'sub/b\.png'"):
        nih.read_split_list(path)
    path.write_text("a.png\nb.png\na.png")
    with pytest.raises(NIHFormatError, match=r"line 3: duplicate image 'a.png' \(first on line 1\)"):
        nih.read_split_list(path)


def test_sample_split_lists(sample_nih_root: Path) -> None:
    train_val = nih.read_split_list(sample_nih_root / "train_val_list.txt")
    test = nih.read_split_list(sample_nih_root / "test_list.txt")
    assert (len(train_val), len(test)) == (16, 12)
    assert not set(train_val) & set(test)


def test_find_image_files_layouts(make_nih_tree) -> None:
    official = make_nih_tree("official", layout="official")
    flat = make_nih_tree("flat", layout="flat")
    for tree in (official, flat):
        assert set(nih.find_image_files(tree.root)) == {row.image_id for row in tree.rows}
    assert len(list(official.root.glob("images_*"))) == 3
    shutil.copy(next(official.root.glob("images_001/images/*.png")), official.root / "images_002" / "images")
    with pytest.raises(NIHFormatError, match="duplicate image"):
        nih.find_image_files(official.root)
    empty = official.root.parent / "empty"
    empty.mkdir()
    with pytest.raises(NIHFormatError, match="no PNG images"):
        nih.find_image_files(empty)


def test_load_source_cross_checks(make_nih_tree, caplog: pytest.LogCaptureFixture) -> None:
    tree = make_nih_tree()
    stray = tree.root / "images_001" / "images" / "99999999_000.png"
    shutil.copy(next(tree.root.glob("images_001/images/*.png")), stray)
    with caplog.at_level(logging.WARNING, logger="pipeline.nih"):
        source = nih.load_source(tree.root)
    assert "99999999_000.png" in caplog.text and "skipped" in caplog.text
    assert source.test == tree.test and source.train_val == tree.train_val
    (tree.root / nih.TEST_LIST).write_text("\n".join([*tree.test, "12345678_000.png"]))
    with pytest.raises(NIHFormatError, match=r"test_list.txt: 1 image\(s\) not in .*12345678_000.png"):
        nih.load_source(tree.root)
    (tree.root / nih.TEST_LIST).write_text("\n".join([*tree.test, tree.train_val[0]]))
    with pytest.raises(NIHFormatError, match="in both"):
        nih.load_source(tree.root)
    (tree.root / nih.TEST_LIST).unlink()
    with pytest.raises(NIHFormatError, match=r"no test_list\.txt in it or one folder down"):
        nih.load_source(tree.root)


def test_patient_in_both_split_lists_is_an_error(make_nih_tree) -> None:
    """Issue 2: no patient in two splits. A train_val row given a test patient's id must stop the conversion."""
    tree = make_nih_tree()
    by_id = {row.image_id: row for row in tree.rows}
    moved, test_patient = by_id[tree.train_val[0]], by_id[tree.test[0]].patient_id
    synthetic.replace_in_row(
        tree.root / synthetic.CSV_2020,
        moved.image_id,
        f",{moved.follow_up},{moved.patient_id},",
        f",{moved.follow_up},{test_patient},",
    )
    with pytest.raises(
        NIHFormatError,
        match=rf"1 patient\(s\) have images in both .*train_val_list\.txt and "
        rf".*test_list\.txt, e\.g\. patient {test_patient};",
    ):
        nih.load_source(tree.root)


def test_split_by_patient_is_disjoint_and_deterministic(nih_tree: synthetic.SyntheticTree) -> None:
    records = nih.read_labels_csv(nih_tree.root / synthetic.CSV_2020)
    names = nih_tree.train_val
    train, validation = nih.split_by_patient(names, records, 0.25, seed=3)
    assert sorted(train + validation) == sorted(names)
    assert not {records[n].patient_id for n in train} & {records[n].patient_id for n in validation}
    patients = {records[n].patient_id for n in names}
    assert len({records[n].patient_id for n in validation}) == round(0.25 * len(patients))
    assert nih.split_by_patient(names, records, 0.25, seed=3) == (train, validation)
    assert nih.split_by_patient(names, records, 0.25, seed=4) != (train, validation)
    assert nih.split_by_patient(names, records, 0.0, seed=3) == (list(names), [])
    with pytest.raises(ValueError, match="fraction"):
        nih.split_by_patient(names, records, 1.0, seed=3)


def test_findings_order_in_records(sample_nih_root: Path) -> None:
    for record in nih.read_labels_csv(sample_nih_root / "Data_Entry_2017_v2020.csv").values():
        assert list(record.findings) == sorted(record.findings, key=FINDINGS.index)
