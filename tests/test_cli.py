"""The command line as a user meets it: instant `--help`, short usage, whole flags only, one-line recipe errors
(also under `accelerate launch -q`), the run folder named at the end, and a quiet package build."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline import train
from pipeline.arguments import ConfigError, parse_args
from pipeline.cli import main, run_recipe

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "timm", "matplotlib")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
# Runs a command (a recipe script, or `chestxray` with its arguments) and reports which heavy libraries it imported.
IMPORTS_RUNNER = f"""
import json, runpy, sys
sys.argv = sys.argv[1:]
try:
    if sys.argv[0].endswith(".py"):
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        from pipeline.cli import main
        main(sys.argv)
except SystemExit:
    pass
sys.stderr.write("\\nIMPORTED " + json.dumps([name for name in {HEAVY!r} if name in sys.modules]))
"""


def run_python(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "command",
    [
        ["convert", "--help"],
        ["push", "--help"],
        ["demo", "--help"],
        ["predict", "--help"],
        ["compare", "--help"],
        ["study", "--help"],
        ["predict", "--model", "org/name", "no_such_image.png"],  # an input error, found before any model loads
        ["push", "no_such_run", "--repo-id", "justname"],
        ["recipes/vit.py", "--help"],
        ["recipes/vit.py"],
        ["recipes/convnet.py", "--config", "no_such_recipe.yaml"],
    ],
    ids=" ".join,
)
def test_help_and_argument_errors_import_no_heavy_library(command):
    result = run_python("-c", IMPORTS_RUNNER, *command)
    imported = json.loads(result.stderr.rpartition("IMPORTED ")[2])
    assert imported == [], f"{' '.join(command)} imported {imported}"


def test_recipe_without_arguments_prints_a_short_usage(tmp_path):
    result = run_python(str(REPO / "recipes" / "vit.py"), cwd=REPO)
    assert result.returncode == 2 and result.stdout == ""
    usage, error = result.stderr.splitlines()
    assert usage.startswith("usage: vit.py --config ") and "/configs/RECIPE.yaml" in usage
    assert error.startswith("error: ") and "configs/*.yaml" in error


def test_recipe_help_is_short_and_names_the_recipes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert help_text.startswith("usage: ") and "--config" in help_text.splitlines()[0]
    assert "--model_name_or_path" in help_text and "--dataset_name_or_path" in help_text
    assert len(help_text.splitlines()) < 40


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_flag_must_be_spelled_out(tmp_path):
    recipe = _recipe(tmp_path, yaml.safe_dump({"model_type": "vit", "dataset_name_or_path": "d", "output_dir": "o"}))
    with pytest.raises(ConfigError, match=r"unknown flag\(s\) --learning_rat 5e-4"):
        parse_args(["--config", str(recipe), "--learning_rat", "5e-4"])
    with pytest.raises(ConfigError, match="--confi"):
        parse_args(["--confi", str(recipe), "--model_type", "vit", "--dataset_name_or_path", "d", "--output_dir", "o"])


def test_chestxray_flags_must_be_spelled_out(capsys):
    with pytest.raises(SystemExit):
        main(["push", "run", "--repo-id", "org/name", "--priv"])
    assert "unrecognized arguments: --priv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model_type: vit\nrunning: [1, 2\n", r"recipe.yaml:3:1: YAML syntax error: expected ',' or ']'"),
        ("model_type: vit\noutput_dir: a: b\n", r"recipe.yaml:2:14: YAML syntax error: mapping values"),
        (
            "model_type: !!python/object/apply:os.system ['echo owned']\n",
            r"recipe.yaml:1:13: could not determine a constructor for the tag .*python/object/apply:os.system.*"
            r"plain values only",
        ),
    ],
    ids=["unclosed list", "colon in a value", "python tag"],
)
def test_yaml_errors_are_one_line_with_file_line_and_column(tmp_path, capsys, text, expected):
    recipe = _recipe(tmp_path, text)
    assert run_recipe(["--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(expected, err), err


def test_the_training_script_names_the_run_folder_last(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "run", lambda *args: tmp_path / "run")
    recipe = _recipe(tmp_path, yaml.safe_dump({"model_type": "vit", "dataset_name_or_path": "d", "output_dir": "o"}))
    assert train.main(["--config", str(recipe), "--use_cpu", "true"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"run folder: {tmp_path / 'run'}"


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not on PATH")
def test_under_accelerate_launch_quiet_the_projects_error_is_the_last_line(tmp_path):
    result = subprocess.run(
        ["accelerate", "launch", "-q", "--cpu", "--num_processes", "1", "recipes/vit.py", "--config", "nope.yaml"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: recipe nope.yaml does not exist"
    assert "Traceback" not in result.stderr


def test_the_package_builds_without_setuptools_warnings(tmp_path):
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info/ into its source
    for folder in ("pipeline", "hub_cards"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    result = run_python(
        "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path / "wheel"),
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "absent from the `packages` configuration" not in output
    assert "Warning" not in output.replace("warning: build_py", "").replace("warning: install_lib", "")
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    files = "\n".join(zipfile.ZipFile(wheel).namelist())
    sample = sorted(path.name for path in (REPO / "pipeline" / "assets" / "nih_sample").rglob("*") if path.is_file())
    assert all(f"/{name}" in files for name in sample)
    assert "pipeline/evaluate_metric/chestxray14/README.md" in files and "pipeline/hub_cards/model_card.md" in files
