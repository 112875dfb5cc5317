"""`chestxray convert` end to end: real sample, generated trees, bad inputs, overwrite and atomic writes."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_nih import parse_2017_by_hand

from pipeline import scratch, synthetic
from pipeline.cli import main
from pipeline.convert import ConversionError, convert
from pipeline.labels import FINDINGS

REPO = Path(__file__).resolve().parent.parent


def run_convert(root: Path, output: Path, *extra: str) -> int:
    return main(["convert", "--nih-root", str(root), "--output", str(output), "--num-proc", "1", *extra])


def insert_bytes(path: Path, offset: int, data: bytes) -> None:
    content = path.read_bytes()
    path.write_bytes(content[:offset] + data + content[offset:])


def read_list(path: Path) -> list[str]:
    return path.read_text().split()


@pytest.fixture(scope="module")
def sample_dataset(sample_nih_root: Path, tmp_path_factory: pytest.TempPathFactory) -> datasets.DatasetDict:
    output = tmp_path_factory.mktemp("sample") / "dataset"
    assert run_convert(sample_nih_root, output, "--image-size", "64", "--num-proc", "2") == 0
    return datasets.load_from_disk(str(output))


def test_sample_rows_equal_pandas_parse_of_v2020(sample_dataset: datasets.DatasetDict, sample_nih_root: Path) -> None:
    frame = pd.read_csv(sample_nih_root / "Data_Entry_2017_v2020.csv", index_col=False).set_index("Image Index")
    seen = 0
    for ds in sample_dataset.values():
        for row in ds.remove_columns("image"):
            expected = frame.loc[row["image_id"]]
            names = set() if expected["Finding Labels"] == "No Finding" else set(expected["Finding Labels"].split("|"))
            assert row["labels"] == [float(name in names) for name in FINDINGS]
            assert row["patient_id"] == expected["Patient ID"] and row["age_years"] == expected["Patient Age"]
            assert row["follow_up"] == expected["Follow-up #"] and row["sex"] == expected["Patient Gender"]
            assert row["view_position"] == expected["View Position"]
            seen += 1
    assert seen == len(frame) == 28


def test_sample_splits(sample_dataset: datasets.DatasetDict, sample_nih_root: Path) -> None:
    assert sample_dataset["test"]["image_id"] == read_list(sample_nih_root / "test_list.txt")
    train_val = [*sample_dataset["train"]["image_id"], *sample_dataset["validation"]["image_id"]]
    assert sorted(train_val) == sorted(read_list(sample_nih_root / "train_val_list.txt"))
    assert len(sample_dataset["validation"]) >= 1
    assert not set(sample_dataset["train"]["patient_id"]) & set(sample_dataset["validation"]["patient_id"])


def test_sample_images_resized_from_1024(sample_dataset: datasets.DatasetDict, sample_nih_root: Path) -> None:
    row = sample_dataset["test"][0]
    assert row["image"].mode == "L" and row["image"].size == (64, 64)
    original = Image.open(sample_nih_root / "images" / row["image_id"]).resize((64, 64), Image.Resampling.BOX)
    assert np.abs(np.asarray(row["image"]).astype(int) - np.asarray(original)).mean() < 4


def test_labels_csv_by_bare_name_is_found_in_the_nih_folder(sample_nih_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the name does not exist here, only in --nih-root
    assert (
        run_convert(sample_nih_root, tmp_path / "out", "--labels-csv", "Data_Entry_2017.csv", "--image-size", "32") == 0
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Data_Entry_2017.csv" in card and "Data_Entry_2017_v2020.csv" not in card


def test_sample_with_2017_csv(sample_nih_root: Path, tmp_path: Path) -> None:
    """The 2017 file (CRLF, 058Y ages, zero padding) converts; rows equal a plain string parse of it."""
    csv = sample_nih_root / "Data_Entry_2017.csv"
    assert run_convert(sample_nih_root, tmp_path / "out", "--labels-csv", str(csv), "--image-size", "32") == 0
    expected = parse_2017_by_hand(csv)
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    rows = [row for ds in dd.values() for row in ds.remove_columns("image")]
    assert len(rows) == len(expected)
    for row in rows:
        findings, patient, age = expected[row["image_id"]]
        assert [FINDINGS[i] for i in np.flatnonzero(row["labels"])] == findings
        assert (row["patient_id"], row["age_years"]) == (patient, age)


def test_generated_flat_2017_tree_keeps_size_and_converts_all_modes(make_nih_tree, tmp_path: Path) -> None:
    tree = make_nih_tree(layout="flat", csv_formats=("2017",), n_images=30)
    assert {row.mode for row in tree.rows} == set(synthetic.IMAGE_MODES)
    assert any(row.age_2017.endswith("M") and int(row.age_2017[:-1]) >= 12 for row in tree.rows)
    assert convert(tree.root, tmp_path / "out", image_size=0, num_proc=1).counts["test"] == len(tree.test)
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    by_id = {row.image_id: row for row in tree.rows}
    for ds in dd.values():
        for example in ds:
            row = by_id[example["image_id"]]
            assert example["image"].mode == "L" and example["image"].size == (32, 32)
            assert example["labels"] == [float(name in row.findings) for name in FINDINGS]
            assert example["patient_id"] == row.patient_id and example["follow_up"] == row.follow_up
            value, unit = int(row.age_2017[:-1]), row.age_2017[-1]
            years = {"Y": value, "M": value // 12, "D": value // 365}[unit]
            assert example["age_years"] == (years if years <= 120 else None)
            for finding in row.findings:  # the blob survives every source mode
                cx, cy = synthetic.signal_center(finding)
                array = np.asarray(example["image"]).astype(int)
                assert array[int(cy * 32), int(cx * 32)] > np.median(array) + 40


def test_split_is_deterministic_and_seeded(make_nih_tree, tmp_path: Path) -> None:
    tree = make_nih_tree(n_images=40)
    ids = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        convert(tree.root, tmp_path / name, image_size=32, validation_fraction=0.3, seed=seed, num_proc=1)
        ids[name] = datasets.load_from_disk(str(tmp_path / name))["validation"]["image_id"]
    assert ids["a"] == ids["b"] != ids["c"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda t: synthetic.replace_in_header(t.root / synthetic.CSV_2020, "Patient ID", "Patient Number"),
            "Data_Entry_2017_v2020.csv: missing column(s) 'Patient ID'",
        ),
        (
            lambda t: synthetic.replace_in_row(
                t.root / synthetic.CSV_2020,
                t.rows[1].image_id,
                f"{t.rows[1].image_id},",
                f"{t.rows[1].image_id},Pneumonitis|",
            ),
            "Data_Entry_2017_v2020.csv, line 3: unknown finding 'Pneumonitis'",
        ),
        (
            lambda t: synthetic.duplicate_row(t.root / synthetic.CSV_2020, t.rows[0].image_id),
            "_000.png' (first on line 2)",
        ),
        (
            lambda t: synthetic.replace_in_row(
                t.root / synthetic.CSV_2020, t.rows[0].image_id, t.rows[0].image_id, "../x.png"
            ),
            "line 2: image name '../x.png' must be a bare file name",
        ),
        (
            lambda t: synthetic.truncate_file(next(t.root.glob("images_002/images/*.png"))),
            "not a readable or complete image file",
        ),
        (
            lambda t: (t.root / synthetic.TRAIN_VAL_LIST).write_text("\n".join([*t.train_val, "00999999_000.png"])),
            "train_val_list.txt: 1 image(s) not in Data_Entry_2017_v2020.csv, e.g. 00999999_000.png",
        ),
        (
            lambda t: [p.unlink() for p in sorted(t.root.glob("images_003/images/*.png"))[:7]],
            "7 of 30 images listed in Data_Entry_2017_v2020.csv and the split lists are missing",
        ),
        (lambda t: (t.root / synthetic.CSV_2020).unlink(), "no label CSV"),
        (
            lambda t: synthetic.replace_in_row(t.root / synthetic.CSV_2020, t.rows[2].image_id, ",PA,", ",P\u00c4,"),
            "Data_Entry_2017_v2020.csv, line 4: View Position 'P\u00c4' is not one of PA, AP",
        ),
        (  # Latin-1 "é" in the first row, after the 150-byte header line
            lambda t: insert_bytes(t.root / synthetic.CSV_2020, 150 + 3, b"\xe9"),
            "Data_Entry_2017_v2020.csv, line 2, byte 153: b'\\xe9' is not UTF-8",
        ),
        (  # in the third name: 17 bytes a line
            lambda t: insert_bytes(t.root / synthetic.TEST_LIST, 2 * 17 + 5, b"\xff"),
            "test_list.txt, line 3, byte 39: b'\\xff' is not UTF-8",
        ),
        (
            lambda t: synthetic.write_decompression_bomb(next(t.root.glob("images_002/images/*.png"))),
            "png: not decoded: Image size (400000000 pixels) exceeds limit",
        ),
    ],
)
def test_bad_input_is_one_clear_error(make_nih_tree, tmp_path: Path, capsys, breakage, message: str) -> None:
    tree = make_nih_tree()
    breakage(tree)
    assert run_convert(tree.root, tmp_path / "out") == 2
    err = capsys.readouterr().err
    last_line = re.split(r"[\r\n]+", err.strip())[-1]  # after the progress bars, if any
    assert last_line.startswith("error: ") and message in last_line and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_allow_missing_converts_what_is_present(make_nih_tree, tmp_path: Path, capsys) -> None:
    tree = make_nih_tree()
    gone = {tree.test[0], tree.train_val[0], tree.train_val[1]}
    for path in tree.root.glob("images_*/images/*.png"):
        if path.name in gone:
            path.unlink()
    assert run_convert(tree.root, tmp_path / "out", "--allow-missing") == 0
    out = capsys.readouterr().out
    assert f"test: {len(tree.test) - 1} images (1 listed but missing on disk)" in out
    card = " ".join((tmp_path / "out" / "README.md").read_text().split())
    assert "3 images named by the split lists were missing on disk" in card and "(train: 2, test: 1)" in card
    assert "**not** the complete official test list" in card and "`test` is exactly" not in card
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    assert sum(ds.num_rows for ds in dd.values()) == len(tree.rows) - 3
    assert not gone & {name for ds in dd.values() for name in ds["image_id"]}


def test_unlabelled_image_is_warned_and_skipped(make_nih_tree, tmp_path: Path, caplog) -> None:
    tree = make_nih_tree()
    shutil.copy(next(tree.root.glob("images_001/images/*.png")), tree.root / "images_001/images/77777777_000.png")
    assert run_convert(tree.root, tmp_path / "out") == 0
    assert "77777777_000.png" in caplog.text
    assert sum(ds.num_rows for ds in datasets.load_from_disk(str(tmp_path / "out")).values()) == len(tree.rows)


def test_existing_output_needs_overwrite(make_nih_tree, tmp_path: Path, capsys) -> None:
    tree = make_nih_tree(image_size=64)
    output = tmp_path / "out"
    output.mkdir()
    assert run_convert(tree.root, output) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert run_convert(tree.root, output, "--overwrite", "--image-size", "48") == 0  # an empty folder
    assert run_convert(tree.root, output, "--overwrite", "--image-size", "32") == 0  # an earlier conversion
    dd = datasets.load_from_disk(str(output))
    assert dd["test"]["image_id"] == tree.test and dd["test"][0]["image"].size == (32, 32)


def test_overwrite_never_replaces_other_folders(make_nih_tree, tmp_path: Path, capsys) -> None:
    """--overwrite replaces only a converted dataset or an empty folder: never user data, never the input."""
    tree = make_nih_tree()
    sources = sorted(p.name for p in (tree.root / "images_003" / "images").iterdir())
    assert run_convert(tree.root, tree.root / "images_003", "--overwrite") == 2
    assert "must not be or be inside the NIH root" in capsys.readouterr().err
    assert sorted(p.name for p in (tree.root / "images_003" / "images").iterdir()) == sources
    assert run_convert(tree.root, tree.root, "--overwrite") == 2
    assert "must not be or be inside the NIH root" in capsys.readouterr().err
    assert run_convert(tree.root, tree.root.parent, "--overwrite") == 2
    assert "must not contain the NIH root" in capsys.readouterr().err
    output = tmp_path / "mine"
    output.mkdir()
    (output / "keep.txt").write_text("user data")
    assert run_convert(tree.root, output, "--overwrite") == 2
    assert "not a converted dataset (no dataset_dict.json) and not empty" in capsys.readouterr().err
    assert (output / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "nih"]


def test_failed_final_rename_puts_the_old_output_back(make_nih_tree, tmp_path: Path, monkeypatch, capsys) -> None:
    tree = make_nih_tree(image_size=64)
    output = tmp_path / "out"
    assert run_convert(tree.root, output, "--image-size", "48") == 0
    rename = Path.rename

    def failing_rename(self: Path, target):
        if Path(target) == output and self.name == "dataset":
            raise OSError("disk on fire")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    assert run_convert(tree.root, output, "--image-size", "32", "--overwrite") == 2
    assert "cannot move the converted dataset to" in capsys.readouterr().err
    assert datasets.load_from_disk(str(output))["test"][0]["image"].size == (48, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih", "out"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--validation-fraction", "0", "between 0 and 1"),
        ("--validation-fraction", "1", "between 0 and 1"),
        ("--validation-fraction", "-0.2", "between 0 and 1"),
        ("--num-proc", "0", "must be at least 1"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(tmp_path: Path, capsys, flag: str, value: str, message: str):
    with pytest.raises(SystemExit) as info:
        run_convert(tmp_path / "nih", tmp_path / "out", flag, value)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_an_empty_split_is_refused_by_name(make_nih_tree, tmp_path: Path, capsys) -> None:
    """A DatasetDict with an empty split cannot be loaded: neither an empty validation nor a fully missing
    test split is written."""
    tree = make_nih_tree()
    with pytest.raises(ConversionError, match=r"the validation split would be empty .*no image assigned"):
        convert(tree.root, tmp_path / "out", validation_fraction=0.0, num_proc=1)
    for path in tree.root.glob("images_*/images/*.png"):
        if path.name in tree.test:
            path.unlink()
    assert run_convert(tree.root, tmp_path / "out", "--allow-missing") == 2
    err = capsys.readouterr().err
    assert f"the test split would be empty (test: all {len(tree.test)} listed images are missing" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih"]


def test_non_square_source_keeps_its_aspect_ratio(make_nih_tree, tmp_path: Path) -> None:
    tree = make_nih_tree(layout="flat")
    wide = tree.root / "images" / tree.test[0]
    Image.fromarray(np.tile(np.arange(96, dtype=np.uint8), (48, 1)), mode="L").save(wide)  # 96 x 48
    convert(tree.root, tmp_path / "out", image_size=32, num_proc=1)
    test = datasets.load_from_disk(str(tmp_path / "out"))["test"]
    sizes = dict(zip(test["image_id"], (image.size for image in test["image"]), strict=True))
    assert sizes[tree.test[0]] == (64, 32)
    assert {size for name, size in sizes.items() if name != tree.test[0]} == {(32, 32)}


def test_bad_image_with_two_processes_is_still_one_clear_error(make_nih_tree, tmp_path: Path, capsys) -> None:
    tree = make_nih_tree()
    broken = next(tree.root.glob("images_002/images/*.png"))
    synthetic.truncate_file(broken)
    assert run_convert(tree.root, tmp_path / "out", "--num-proc", "2") == 2
    err = capsys.readouterr().err
    last_line = re.split(r"[\r\n]+", err.strip())[-1]
    assert last_line.startswith("error: ") and f"{broken.name}: not a readable or complete image" in last_line
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_convert_does_not_import_torch() -> None:
    """`chestxray convert` needs no deep-learning library: importing torch costs seconds and ~850 MiB."""
    code = "import sys, pipeline.cli, pipeline.convert; print(sorted({'torch', 'timm'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def test_failure_mid_way_leaves_nothing_loadable(make_nih_tree, tmp_path: Path) -> None:
    """The last split's image is broken: train is written by then, yet neither a partial output nor
    scratch folders remain, and an existing output being overwritten stays as it was."""
    tree = make_nih_tree(image_size=64)
    output = tmp_path / "out"
    assert run_convert(tree.root, output, "--image-size", "48") == 0
    before = datasets.load_from_disk(str(output))["train"]["image_id"]
    synthetic.truncate_file(next(p for p in tree.root.glob("images_*/images/*.png") if p.name == tree.test[-1]))
    assert run_convert(tree.root, output, "--overwrite", "--image-size", "32", "--validation-fraction", "0.5") == 2
    assert datasets.load_from_disk(str(output))["train"]["image_id"] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih", "out"]
    assert run_convert(tree.root, tmp_path / "new") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih", "out"]


def test_readme_card_written_with_the_dataset(make_nih_tree, tmp_path: Path) -> None:
    tree = make_nih_tree()
    convert(tree.root, tmp_path / "out", image_size=32, num_proc=1)
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "ChestXray-NIHCC" in card and "| `image_size` | `32` |" in card


def test_push_offline_fails_with_one_line(make_nih_tree, tmp_path: Path) -> None:
    tree = make_nih_tree()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "convert",
            "--nih-root",
            str(tree.root),
            "--output",
            str(tmp_path / "out"),
            "--num-proc",
            "1",
            "--image-size",
            "32",
            "--push-to-hub",
            "someone/nih",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: upload to someone/nih failed: the Hub is not reachable in offline mode "
        "(HF_HUB_OFFLINE=1); unset it to upload"
    ]
    assert "Traceback" not in result.stderr
    assert datasets.load_from_disk(str(tmp_path / "out"))["test"].num_rows == len(tree.test)


SLOW_CONVERT = """
import sys, time
from pipeline import dataset
from pipeline.cli import main

prepare_png = dataset.prepare_png
dataset.prepare_png = lambda *args: (time.sleep(0.2), prepare_png(*args))[1]  # forked workers inherit it
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killed_conversion_leaves_no_worker_and_the_next_run_cleans_up(make_nih_tree, tmp_path: Path, signum) -> None:
    """Killed mid-conversion with 2 workers: the map's worker and manager processes die with it, and the
    next run removes the hidden partial folder the killed one left and succeeds."""
    tree = make_nih_tree()
    output = tmp_path / "out"
    argv = ["convert", "--nih-root", str(tree.root), "--output", str(output), "--num-proc", "2", "--image-size", "32"]
    process = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, *argv], cwd=REPO, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        for _ in range(600):  # the pool's 2 workers and datasets' manager process
            children = _children(process.pid)
            if len(children) >= 3 or process.poll() is not None:
                break
            time.sleep(0.05)
        assert len(children) >= 3, "the conversion never started its worker processes"
        process.send_signal(signum)
        assert process.wait(timeout=30) == -signum
        for _ in range(100):
            if not _alive(children):
                break
            time.sleep(0.05)
        assert not _alive(children), "worker processes outlived the killed conversion"
    finally:
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)
    partial = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert len(partial) == 1 and not output.exists()
    assert run_convert(tree.root, output, "--image-size", "32") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih", "out"]
    assert datasets.load_from_disk(str(output))["test"]["image_id"] == tree.test


def _partial(output: Path, suffix: str, owner: dict | None) -> Path:
    folder = output.parent / f".{output.name}.partial-{suffix}"
    folder.mkdir()
    if owner is not None:
        (folder / scratch.OWNER_FILE).write_text(json.dumps(owner))
    return folder


@pytest.mark.skipif(sys.platform != "linux", reason="process start times come from /proc")
def test_only_partial_folders_of_dead_owners_on_this_host_are_removed(make_nih_tree, tmp_path: Path) -> None:
    """A PID alone is unsafe (reused): the start time must match too. Another host's folder (a shared
    filesystem), a live conversion's, one without a marker and other outputs' folders are left alone."""
    tree = make_nih_tree()
    output = tmp_path / "out"
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start_time": scratch.process_start_time(os.getpid())}
    dead = _partial(output, "dead", {**me, "start_time": me["start_time"] - 1})  # same PID, another process
    kept = [
        _partial(output, "live", me),
        _partial(output, "other-host", {**me, "host": "elsewhere", "start_time": me["start_time"] - 1}),
        _partial(output, "no-marker", None),
        _partial(tmp_path / "other", "dead", {**me, "start_time": me["start_time"] - 1}),
    ]
    assert run_convert(tree.root, output, "--image-size", "32") == 0
    assert not dead.exists() and all(folder.is_dir() for folder in kept)
    assert datasets.load_from_disk(str(output))["test"]["image_id"] == tree.test


def _last_error(err: str) -> str:
    last_line = re.split(r"[\r\n]+", err.strip())[-1]  # after the progress bars, if any
    assert last_line.startswith("error: ") and "Traceback" not in err
    return last_line


def test_unreadable_label_csv_is_one_line(make_nih_tree, tmp_path: Path, monkeypatch, capsys) -> None:
    """Tests run as root, where chmod cannot deny a read: EACCES is injected at the read."""
    tree = make_nih_tree()
    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == synthetic.CSV_2020:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert run_convert(tree.root, tmp_path / "out") == 2
    assert _last_error(capsys.readouterr().err).endswith(f"{synthetic.CSV_2020}: cannot read (Permission denied)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih"]


def test_output_parent_without_write_permission_is_one_line(make_nih_tree, tmp_path: Path, monkeypatch, capsys):
    tree = make_nih_tree()
    locked = tmp_path / "locked"
    locked.mkdir()
    mkdir = os.mkdir

    def denied(path, *args, **kwargs):
        if Path(path).parent == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", denied)
    assert run_convert(tree.root, locked / "out") == 2
    line = _last_error(capsys.readouterr().err)
    assert f"cannot write the dataset next to {locked / 'out'}: Permission denied ({locked}/.out.partial-" in line
    assert list(locked.iterdir()) == []


def test_disk_full_while_writing_is_one_line_and_keeps_the_old_output(
    make_nih_tree, tmp_path: Path, monkeypatch, capsys
):
    tree = make_nih_tree()
    output = tmp_path / "out"
    assert run_convert(tree.root, output, "--image-size", "32") == 0

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)

    monkeypatch.setattr(datasets.arrow_writer.ArrowWriter, "_write_table", disk_full)
    assert run_convert(tree.root, output, "--image-size", "32", "--overwrite") == 2
    line = _last_error(capsys.readouterr().err)
    assert f"cannot write the dataset next to {output}: No space left on device (" in line
    assert line.endswith(f"); nothing was changed at {output}") and "/.out.partial-" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nih", "out"]
    monkeypatch.undo()
    assert datasets.load_from_disk(str(output))["test"]["image_id"] == tree.test


@pytest.mark.parametrize("size", ["1", "31", "1025", "100000", "-1"])
def test_image_size_outside_the_range_is_refused(tmp_path: Path, capsys, size: str) -> None:
    assert run_convert(tmp_path / "nih", tmp_path / "out", "--image-size", size) == 2
    assert capsys.readouterr().err == (
        f"error: --image-size {size}: expected 0 (keep the source size) or 32 to 1024 pixels\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_image_size_0_with_mixed_sources_warns_and_keeps_each_size(make_nih_tree, tmp_path: Path, caplog) -> None:
    tree = make_nih_tree(layout="flat")
    Image.new("L", (48, 24)).save(tree.root / "images" / tree.test[0])
    with caplog.at_level(logging.WARNING, logger="pipeline.convert"):
        assert run_convert(tree.root, tmp_path / "out", "--image-size", "0") == 0
    assert "--image-size 0 keeps each image's own size, and the sources have 2 sizes (32x32: 29, 48x24: 1)" in (
        caplog.text
    )
    test = datasets.load_from_disk(str(tmp_path / "out"))["test"]
    assert {image.size for image in test["image"]} == {(32, 32), (48, 24)}


def test_label_files_one_folder_down_are_found(make_nih_tree, tmp_path: Path, capsys) -> None:
    tree = make_nih_tree()
    (tree.root / "metadata").mkdir()
    for name in (synthetic.CSV_2020, synthetic.TRAIN_VAL_LIST, synthetic.TEST_LIST):
        (tree.root / name).rename(tree.root / "metadata" / name)
    assert run_convert(tree.root, tmp_path / "out", "--image-size", "32") == 0
    assert datasets.load_from_disk(str(tmp_path / "out"))["test"]["image_id"] == tree.test
    (tree.root / "old").mkdir()
    shutil.copy(tree.root / "metadata" / synthetic.TEST_LIST, tree.root / "old" / synthetic.TEST_LIST)
    assert run_convert(tree.root, tmp_path / "again") == 2
    assert _last_error(capsys.readouterr().err) == (
        f"error: {tree.root}: 2 split lists named test_list.txt: {tree.root}/metadata/test_list.txt, "
        f"{tree.root}/old/test_list.txt; pass --test-list to choose"
    )
    assert not (tmp_path / "again").exists()


def test_split_lists_by_option(make_nih_tree, tmp_path: Path, capsys) -> None:
    """--train-val-list/--test-list take any file; a bare or relative name is looked for in --nih-root too."""
    tree = make_nih_tree()
    (tree.root / "lists").mkdir()
    (tree.root / synthetic.TRAIN_VAL_LIST).rename(tree.root / "lists" / "trainval.txt")
    (tree.root / synthetic.TEST_LIST).rename(tmp_path / "my_test.txt")
    assert run_convert(tree.root, tmp_path / "out", "--image-size", "32") == 2
    assert "no train_val_list.txt in it or one folder down (or pass --train-val-list)" in capsys.readouterr().err
    flags = ("--train-val-list", "lists/trainval.txt", "--test-list", str(tmp_path / "my_test.txt"))
    assert run_convert(tree.root, tmp_path / "out", "--image-size", "32", *flags) == 0
    dd = datasets.load_from_disk(str(tmp_path / "out"))
    assert dd["test"]["image_id"] == tree.test
    assert sorted([*dd["train"]["image_id"], *dd["validation"]["image_id"]]) == tree.train_val


def test_a_bad_push_to_hub_id_is_refused_before_converting(make_nih_tree, tmp_path: Path, capsys) -> None:
    tree = make_nih_tree()
    argv = ["convert", "--nih-root", str(tree.root), "--output", str(tmp_path / "out"), "--push-to-hub", "justname"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --push-to-hub 'justname' is not a Hub repo id: expected ORG/NAME")
    assert not (tmp_path / "out").exists()
