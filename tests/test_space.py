"""`chestxray push --space`: the Space folder of a dry run runs without this project installed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from isolation import run_without_project
from run_folder_factory import SAMPLE_ROOT, make_run_folder
from test_hub import recorded_hub  # noqa: F401  (a fixture: HfApi calls recorded offline)

from pipeline.cli import main
from pipeline.predict import Predictor

IN_CI = os.environ.get("CI", "").lower() == "true"
PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
EXAMPLE = "00004296_000.png"

SCORE_AN_EXAMPLE = """
import json, sys
sys.dont_write_bytecode = True  # leave the Space folder as written (python -I ignores PYTHONDONTWRITEBYTECODE)
sys.path.insert(0, ".")
import app  # builds the page, as the Space does
from chestxray_demo.demo_page import DemoModel
from chestxray_demo.images import load_image
assert type(app.demo).__name__ == "Blocks", type(app.demo)
assert not [name for name in sys.modules if name.partition(".")[0] == "pipeline"]
print(json.dumps(DemoModel(app.MODEL).scores(load_image("examples/" + sys.argv[1]))["probabilities"]))
"""


SPACE_ARGS = ["--repo-id", "me/tiny-cxr", "--space", "me/tiny-cxr-demo"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> Path:
    if importlib.util.find_spec("gradio") is None:
        message = "writing a Space needs gradio: pip install -e '.[demo]'"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    root = tmp_path_factory.mktemp("space")
    run = make_run_folder(root / "run", with_checkpoint=False)
    assert main(["push", str(run), *SPACE_ARGS, "--dry-run", str(root / "up")]) == 0
    return root / "up"


def test_the_model_card_and_the_space_link_each_other(dry_run):
    assert "https://huggingface.co/spaces/me/tiny-cxr-demo" in (dry_run / "model" / "README.md").read_text()
    readme = (dry_run / "space" / "README.md").read_text()
    front = yaml.safe_load(readme.split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == ["me/tiny-cxr"]
    assert "https://huggingface.co/me/tiny-cxr" in readme and "not a diagnostic device" in readme
    assert (dry_run / "space" / "examples" / EXAMPLE).read_bytes() == (SAMPLE_ROOT / "images" / EXAMPLE).read_bytes()


def test_the_space_ships_the_projects_own_modules_unchanged_but_for_import_lines(dry_run):
    package = dry_run / "space" / "chestxray_demo"
    copies = sorted(path.relative_to(package) for path in package.rglob("*.py"))
    assert {Path("demo_page.py"), Path("predict.py"), Path("images.py"), Path("explain.py")} <= set(copies)
    for relative in copies:
        original = (PACKAGE / relative).read_text().splitlines()
        copy = (package / relative).read_text().splitlines()
        assert len(copy) == len(original)
        for before, after in zip(original, copy, strict=True):
            if before != after:
                assert re.match(r"\s*(from|import) pipeline\b", before), before
                assert after == before.replace("pipeline", "chestxray_demo", 1)
    requirements = (dry_run / "space" / "requirements.txt").read_text().split()
    names = {re.split(r"[<>=!~]", line)[0].replace("_", "-") for line in requirements}
    assert {"gradio", "torch", "transformers", "pillow", "pydicom", "huggingface-hub"} <= names
    assert not {"chestxray-pipeline", "pipeline", "playwright"} & names  # published packages the page needs only


def test_the_space_app_builds_and_scores_like_predict_without_this_project(dry_run):
    env = {"CHESTXRAY_MODEL": str(dry_run / "model"), "HF_HUB_OFFLINE": "1"}
    result = run_without_project(SCORE_AN_EXAMPLE, EXAMPLE, cwd=dry_run / "space", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    predicted = Predictor.from_pretrained(dry_run / "model").predict([str(SAMPLE_ROOT / "images" / EXAMPLE)])[0]
    assert scores == pytest.approx(predicted["probabilities"], abs=1e-6)


def test_a_bad_space_id_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    capsys.readouterr()
    argv = ["push", str(run), "--repo-id", "me/tiny-cxr", "--space", "bad id!", "--dry-run", str(tmp_path / "up")]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --space 'bad id!' is not a Hub repo id: expected ORG/NAME")
    assert not (tmp_path / "up").exists()


def test_push_uploads_the_model_then_the_space_as_in_the_dry_run(dry_run, recorded_hub, tmp_path, capsys):  # noqa: F811
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    assert main(["push", str(run), *SPACE_ARGS]) == 0
    assert [name for name, _ in recorded_hub] == ["create_repo", "upload_folder", "create_repo", "upload_folder"]
    _, (_, model), (_, space_repo), (_, space) = recorded_hub
    assert model["repo_id"] == "me/tiny-cxr" and "repo_type" not in model
    assert space_repo["repo_id"] == "me/tiny-cxr-demo"
    assert space_repo["repo_type"] == "space" and space_repo["space_sdk"] == "gradio"
    assert space["repo_id"] == "me/tiny-cxr-demo" and space["repo_type"] == "space"
    for upload, folder in ((model, dry_run / "model"), (space, dry_run / "space")):
        assert set(upload["contents"]) == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "https://huggingface.co/spaces/me/tiny-cxr-demo" in capsys.readouterr().out
