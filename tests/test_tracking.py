"""Training you can watch: what reaches the tracker (trackio by default, TensorBoard on request), and that a run
without a tracker trains as before and writes no tracking anywhere.

The session's tracker storage is a temporary folder (`tracker_storage` in conftest.py).
"""

import json
import logging
import sys
from pathlib import Path

import pytest
import yaml
from training import argv

from pipeline.arguments import parse_args
from pipeline.cli import run_recipe
from pipeline.labels import FINDINGS
from pipeline.tracking import NO_TRACKER_HINT
from pipeline.train import main

TINY = {"num_train_epochs": 1, "max_train_samples": 64, "max_eval_samples": 32, "logging_steps": 1}


def history(run_dir: Path, key: str) -> list[float]:
    log = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return [entry[key] for entry in log if key in entry]


def trackio_values(project: str, run: str, metric: str) -> list[float]:
    from trackio.sqlite_storage import SQLiteStorage

    return [row["value"] for row in SQLiteStorage.get_metric_values(project, run, metric)]


def test_a_run_logs_its_curves_and_test_metrics_to_trackio_by_default(trained_run):
    """`trained_run` (conftest) sets no report_to: it logs to trackio, project chestxray14, run named after its
    folder; every value there is the one the run folder holds."""
    pytest.importorskip("trackio")
    config = yaml.safe_load((trained_run / "run_config.yaml").read_text())["training"]
    assert (config["report_to"], config["project"], config["run_name"]) == (["trackio"], "chestxray14", "paper_cnn")

    def logged(metric: str) -> list[float]:
        return trackio_values("chestxray14", "paper_cnn", metric)

    # One value per epoch; then the best model's validation score, logged by the final prediction on validation.
    per_epoch = history(trained_run, "eval_auroc_mean")
    assert len(per_epoch) == 6
    assert logged("eval/auroc_mean") == [*per_epoch, max(per_epoch)]
    eval_results = json.loads((trained_run / "eval_results.json").read_text())
    defined = [name for name in FINDINGS if f"eval_auroc_{name}" in eval_results]  # positives and negatives
    assert len(defined) >= 10
    for finding in defined:
        assert logged(f"eval/auroc_{finding}")[:6] == history(trained_run, f"eval_auroc_{finding}")
    assert logged("train/loss") == history(trained_run, "loss")
    assert logged("train/learning_rate") == history(trained_run, "learning_rate")
    throughput = logged("train/images_per_second")
    assert len(throughput) == len(history(trained_run, "loss")) and min(throughput) > 0
    test_results = json.loads((trained_run / "test_results.json").read_text())
    assert logged("test/auroc_mean") == [test_results["test_auroc_mean"]]  # once: no duplicate
    assert logged("test/f1_macro_tuned") == [test_results["test_f1_macro_tuned"]]


def test_tensorboard_when_the_recipe_asks_for_it(tiny_dataset_dir, tmp_path, tracker_storage):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("report_to: tensorboard\nproject: tensorboard_only\n")
    output_dir = tmp_path / "run"
    assert main(["--config", str(recipe), *argv(tiny_dataset_dir, output_dir, **TINY)]) == 0

    scalars = {}
    for events_file in sorted((output_dir / "runs").rglob("events.out.tfevents.*")):  # one more after training
        accumulator = EventAccumulator(str(events_file)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    test_results = json.loads((output_dir / "test_results.json").read_text())
    assert scalars["test/auroc_mean"] == [pytest.approx(test_results["test_auroc_mean"])]  # float32 in the file
    assert scalars["eval/auroc_mean"] == pytest.approx(history(output_dir, "eval_auroc_mean"))
    assert scalars["train/loss"] == pytest.approx(history(output_dir, "loss"))
    assert len(scalars["train/images_per_second"]) == len(history(output_dir, "loss")) == 2
    assert not list(tracker_storage.glob("tensorboard_only*"))  # trackio, installed or not, was not asked


@pytest.mark.parametrize("hide_trackio", [False, True], ids=["report_to_none", "trackio_missing"])
def test_without_a_tracker_a_run_trains_and_writes_no_tracking(
    tiny_dataset_dir, tmp_path, tracker_storage, monkeypatch, caplog, hide_trackio
):
    """`report_to: none` logs nowhere; with no tracker installed (simulated: trackio hidden from imports) and no
    report_to, the run says so in one line (through the recipe scripts' entry point, which parses once) and
    trains normally."""
    flags = argv(tiny_dataset_dir, tmp_path / "run", project="untracked", **TINY)
    if hide_trackio:
        monkeypatch.setitem(sys.modules, "trackio", None)
    else:
        flags += ["--report_to", "none"]
    with caplog.at_level(logging.WARNING, logger="pipeline.tracking"):
        assert run_recipe(flags) == 0
    assert (tmp_path / "run" / "test_results.json").is_file()
    hints = [record.getMessage() for record in caplog.records if record.name == "pipeline.tracking"]
    assert hints == ([NO_TRACKER_HINT] if hide_trackio else [])
    assert not list(tracker_storage.glob("untracked*"))
    assert not (tmp_path / "run" / "runs").exists()  # TensorBoard's folder
    assert yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())["training"]["report_to"] == []


REQUIRED = ["--model_type", "paper_cnn", "--dataset_name_or_path", "d"]


def test_report_to_from_the_recipe_then_the_command_line(tmp_path):
    pytest.importorskip("tensorboard")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("report_to: tensorboard\n")
    flags = ["--config", str(recipe), *REQUIRED, "--output_dir", str(tmp_path / "run")]
    assert parse_args(flags)[2].report_to == ["tensorboard"]
    assert parse_args([*flags, "--report_to", "none"])[2].report_to == []


def test_tracker_defaults_and_names(tmp_path, monkeypatch):
    _, _, training = parse_args([*REQUIRED, "--output_dir", str(tmp_path), "--project", "p", "--run_name", "first"])
    assert (training.project, training.run_name) == ("p", "first")
    monkeypatch.setitem(sys.modules, "trackio", None)
    _, _, training = parse_args([*REQUIRED, "--output_dir", str(tmp_path / "vit_b16")])
    assert (training.report_to, training.project, training.run_name) == ([], "chestxray14", "vit_b16")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("trackoi", "error: report_to: unknown tracker trackoi (known: "),
        ("trackio", "error: report_to: trackio is not installed (pip install -e .[tracking])"),
    ],
)
def test_a_tracker_that_cannot_log_fails_before_training(tmp_path, monkeypatch, capsys, value, message):
    monkeypatch.setitem(sys.modules, "trackio", None)
    flags = ["--model_type", "paper_cnn", "--dataset_name_or_path", str(tmp_path / "no_dataset")]
    assert main([*flags, "--output_dir", str(tmp_path / "run"), "--report_to", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
