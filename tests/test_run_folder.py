"""The run folder's owner: what marks a run finished, and what a run records of its test split."""

import json
import shutil

import pytest
from run_folder_factory import make_run_folder
from training import argv

from pipeline.arguments import parse_args
from pipeline.run_folder import RunFolder
from pipeline.train import run


def test_a_run_missing_its_last_file_is_not_finished(trained_run, tmp_path):
    for name in ("test_results.json", "test_predictions.csv"):
        copy = shutil.copytree(trained_run, tmp_path / name, ignore=shutil.ignore_patterns("checkpoint-*"))
        assert RunFolder(copy).is_finished()
        (copy / name).unlink()
        assert not RunFolder(copy).is_finished(), name


def test_training_records_a_cut_test_split_and_writes_the_finish_mark_last(tiny_dataset_dir, tmp_path):
    output_dir = tmp_path / "run"
    run(*parse_args(argv(tiny_dataset_dir, output_dir, num_train_epochs=1, max_train_samples=32, max_eval_samples=8)))
    record = json.loads((output_dir / "test_split.json").read_text())
    assert record == {"images": 8, "official_images": 25_596, "max_eval_samples": 8}
    assert RunFolder(output_dir).test_split().describe() == (
        "8 of the 25,596 official test images, cut by max_eval_samples"
    )
    # test_results.json marks a finished run: nothing in the folder may be written after it.
    files = [path for path in output_dir.iterdir() if path.is_file()]
    last = max(files, key=lambda path: path.stat().st_mtime_ns)
    assert last.stat().st_mtime_ns == (output_dir / "test_results.json").stat().st_mtime_ns, last.name


def test_older_run_folders_count_their_test_predictions(tmp_path):
    folder = RunFolder(make_run_folder(tmp_path / "run", with_checkpoint=False, test_images=None))
    rows = len((folder.path / "test_predictions.csv").read_text().splitlines()) - 1
    assert folder.test_split().images == rows
    assert not folder.test_split().complete


@pytest.mark.parametrize("content", ["{", '{"images": 3, "colour": 1}'])
def test_a_broken_test_split_record_names_the_file(tmp_path, content):
    folder = RunFolder(tmp_path)
    (tmp_path / "test_split.json").write_text(content)
    with pytest.raises(ValueError, match=r"test_split\.json"):
        folder.test_split()
