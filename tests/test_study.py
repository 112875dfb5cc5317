"""`chestxray study`: every run trained once with the same data and seed, then one report."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from pipeline.arguments import ConfigError, parse_args
from pipeline.cli import main
from pipeline.study import StudyConfig, to_flags

RECIPES = Path(__file__).parents[1] / "recipes"


def write_study(tmp_path: Path, **values) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_shipped_study_configs_name_existing_recipes():
    for name in ("study.yaml", "study_tiny.yaml"):
        config = StudyConfig.from_yaml(RECIPES / name)
        for run in config.runs:
            _, data, training = parse_args(config.run_argv(run))
            assert data.dataset_name_or_path == config.dataset_name_or_path
            assert training.seed == config.seed
            assert Path(training.output_dir) == Path(config.output_dir) / "runs" / run
            # One tracker project per study, one run per variant: the curves overlay in the dashboard.
            assert (training.project, training.run_name) == (Path(config.output_dir).name, run)


def test_run_overrides_win_over_study_overrides_and_the_recipe(tmp_path):
    path = write_study(
        tmp_path,
        dataset_name_or_path="data",
        output_dir=str(tmp_path / "study"),
        recipes_dir=str(RECIPES / "configs"),
        runs=["cnn_paper", "vit_v1_32_scratch"],
        overrides={"num_train_epochs": 2, "learning_rate": 0.5},
        run_overrides={"vit_v1_32_scratch": {"learning_rate": 0.25, "config_overrides": {"hidden_size": 32}}},
    )
    config = StudyConfig.from_yaml(path)
    _, _, cnn = parse_args(config.run_argv("cnn_paper"))
    vit_model, _, vit = parse_args(config.run_argv("vit_v1_32_scratch"))
    assert (cnn.num_train_epochs, cnn.learning_rate) == (2, 0.5)
    assert (vit.num_train_epochs, vit.learning_rate) == (2, 0.25)
    assert vit_model.config_overrides == {"hidden_size": 32}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"runs": ["cnn_paper"], "epochs": 3}, "unknown key"),
        ({"runs": ["no_such_recipe"]}, "no recipe"),
        ({"runs": ["cnn_paper"], "run_overrides": {"resnet34_scratch": {}}}, "not in `runs`"),
        ({"runs": ["cnn_paper"], "compare": {"bootstraps": 10}}, "unknown compare option"),
        ({"runs": ["cnn_paper"], "compare": {"output": "elsewhere"}}, "unknown compare option"),
    ],
)
def test_bad_study_configs_fail_before_training(tmp_path, values, message):
    path = write_study(
        tmp_path, dataset_name_or_path="d", output_dir=str(tmp_path), recipes_dir=str(RECIPES / "configs"), **values
    )
    with pytest.raises(ConfigError, match=message):
        config = StudyConfig.from_yaml(path)
        for run in config.runs:
            config.run_argv(run)


def test_flags_round_trip_through_the_parser():
    assert to_flags({"a": True, "b": {"x": [1, 2]}, "c": 0.5}) == ["--a", "true", "--b", '{"x": [1, 2]}', "--c", "0.5"]


def test_study_trains_each_run_once_then_reports(tiny_dataset_dir, tmp_path, capsys, tracker_storage):
    study = write_study(
        tmp_path,
        dataset_name_or_path=str(tiny_dataset_dir),
        output_dir=str(tmp_path / "study"),
        recipes_dir=str(RECIPES / "configs"),
        runs=["cnn_paper", "vit_v1_32_scratch"],
        overrides={
            "image_size": 32,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 32,
            "dataloader_num_workers": 0,
            "use_cpu": True,
            "disable_tqdm": True,
        },
        compare={"bootstrap": 20, "explain_images": 1},
    )
    assert main(["study", "--config", str(study)]) == 0
    report = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "cnn_paper" in report and "vit_v1_32_scratch" in report
    runs = tmp_path / "study" / "runs"
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("test_results.json")}
    assert len(stamps) == 2
    capsys.readouterr()

    assert main(["study", "--config", str(study)]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("test_results.json")} == stamps

    # Where trackio is installed (recipes log to it by default), both runs are in one project named after the study.
    if importlib.util.find_spec("trackio") is None:
        assert not list(tracker_storage.glob("study*"))
    else:
        from trackio.sqlite_storage import SQLiteStorage

        assert sorted(SQLiteStorage.get_runs("study")) == ["cnn_paper", "vit_v1_32_scratch"]


def test_a_run_folder_holding_something_else_is_one_line_and_kept(tiny_dataset_dir, tmp_path, capsys):
    study = write_study(
        tmp_path,
        dataset_name_or_path=str(tiny_dataset_dir),
        output_dir=str(tmp_path / "study"),
        recipes_dir=str(RECIPES / "configs"),
        runs=["cnn_paper"],
        overrides={"use_cpu": True},
    )
    stray = tmp_path / "study" / "runs" / "cnn_paper" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("mine")
    assert main(["study", "--config", str(study)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: output_dir ") and "is not empty" in error and error.count("\n") == 1
    assert stray.read_text() == "mine"
