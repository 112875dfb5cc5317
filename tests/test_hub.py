"""`chestxray push`: the folder it uploads (dry run), the upload calls (HfApi recorded offline), one-line errors,
and a published folder that loads and runs without this project, with the card's snippets really running."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import HfApi, ModelCard
from isolation import run_without_project
from PIL import Image
from run_folder_factory import make_run_folder

import pipeline.hub as hub
from pipeline import train
from pipeline.arguments import parse_args
from pipeline.cards import example_images
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.labels import FINDINGS

REPO_ID = "org/chest-vit"
SHIPPED_FROM_RUN = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "thresholds.json",
    "all_results.json",
    "eval_results.json",
    "test_results.json",
    "test_split.json",
    "run_config.yaml",
}
FAKE_TOKEN = "hf_testtokenthatmustneverbewritten"


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("vit") / "run")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("cnn") / "run", model="paper_cnn", pretrained=False)


@pytest.fixture(scope="module")
def published(vit_run, tmp_path_factory):
    return _dry_run(vit_run, tmp_path_factory.mktemp("published") / "out")


@pytest.fixture(scope="module")
def published_cnn(cnn_run, tmp_path_factory):
    return _dry_run(cnn_run, tmp_path_factory.mktemp("published_cnn") / "out")


def _dry_run(run_dir: Path, out: Path) -> Path:
    assert main(["push", str(run_dir), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 0
    return out


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_dry_run_folder_holds_exactly_what_is_published(vit_run, published):
    examples = {e.repo_path for e in example_images()}
    assert _files(published) == SHIPPED_FROM_RUN | examples | {"README.md"}
    for name in SHIPPED_FROM_RUN:
        assert (published / name).read_bytes() == (vit_run / name).read_bytes()
    for example in example_images():
        assert (published / example.repo_path).read_bytes() == example.path.read_bytes()
    assert ModelCard.load(published / "README.md").data.pipeline_tag == "image-classification"


def test_a_real_training_run_publishes_a_card_and_a_working_pipeline_model(tiny_dataset_dir, tmp_path):
    """The folder `pipeline.train.run` writes (not a hand-made one) goes through push --dry-run and runs."""
    run_dir = tmp_path / "run"
    flags = {
        "model_type": "paper_cnn",
        "image_size": "32",
        "num_train_epochs": "1",
        "use_cpu": "true",
        "dataloader_num_workers": "0",
        "disable_tqdm": "true",
        "report_to": "none",
        "dataset_name_or_path": str(tiny_dataset_dir),
        "output_dir": str(run_dir),
    }
    train.run(*parse_args([item for key, value in flags.items() for item in (f"--{key}", value)]))
    out = tmp_path / "published"
    assert main(["push", str(run_dir), "--repo-id", "org/paper-cnn", "--dry-run", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    metrics = json.loads((run_dir / "test_results.json").read_text())
    assert card.data.pipeline_tag == "image-classification" and "base_model" not in card.data.to_dict()
    assert "trained from scratch" in card.text and "paper_cnn.py" in card.text
    # The tiny dataset's test split is partial: the card says so and keeps its number out of the published table.
    assert "| This model |" not in card.text
    assert f"mean AUROC ({metrics['test_auroc_mean']:.3f}) is on a partial test split" in " ".join(card.text.split())
    classifier = transformers.pipeline("image-classification", model=str(out), top_k=14, trust_remote_code=True)
    example = out / example_images()[0].repo_path
    scores = {score["label"]: score["score"] for score in classifier(str(example))}
    assert set(scores) == set(FINDINGS)
    # Independent sigmoids of the published model's logits (a softmax would sum to 1 and differ).
    model = transformers.AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    with torch.no_grad():
        logits = model(**processor(Image.open(example).convert("RGB"), return_tensors="pt")).logits[0]
    expected = torch.sigmoid(logits).tolist()
    assert [scores[model.config.id2label[i]] for i in range(14)] == pytest.approx(expected, abs=1e-6)


def test_dry_run_lists_the_files(vit_run, tmp_path, capsys):
    assert main(["push", str(vit_run), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for name in _files(tmp_path / "out"):
        assert re.search(rf"^\s*[\d,]+\s+{re.escape(name)}$", out, re.MULTILINE)
    assert "nothing uploaded" in out


def test_custom_code_is_published_with_the_model(cnn_run, published_cnn):
    assert "paper_cnn.py" in _files(published_cnn)
    assert (published_cnn / "paper_cnn.py").read_bytes() == (cnn_run / "paper_cnn.py").read_bytes()


def test_dry_run_refuses_a_non_empty_folder_without_overwrite(vit_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["push", str(vit_run), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    assert (out / "mine.txt").read_text() == "keep me"
    assert main(["push", str(vit_run), "--repo-id", REPO_ID, "--dry-run", str(out), "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "README.md").is_file()


def test_overwrite_never_deletes_the_run_folder(vit_run, capsys):
    assert main(["push", str(vit_run), "--repo-id", REPO_ID, "--dry-run", str(vit_run.parent), "--overwrite"]) == 2
    assert "holds the run folder" in capsys.readouterr().err
    assert (vit_run / "model.safetensors").is_file()


def test_missing_model_file_is_named(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (run / "model.safetensors").unlink()
    assert main(["push", str(run), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out")]) == 2
    assert "missing model.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize("repo_id", ["justname", "org/team/name", "org/bad name"])
def test_a_repo_id_that_is_not_org_slash_name_is_refused_up_front(repo_id, tmp_path, capsys):
    assert main(["push", str(tmp_path / "no_such_run"), "--repo-id", repo_id, "--dry-run", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --repo-id {repo_id!r} is not a Hub repo id") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_hub_model_id_must_be_org_slash_name(tmp_path):
    flags = ["--model_type", "vit", "--dataset_name_or_path", "d", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match="hub_model_id 'justname' is not a Hub repo id"):
        parse_args([*flags, "--push_to_hub", "true", "--hub_model_id", "justname"])


def test_a_failed_dry_run_leaves_no_folder_behind(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (run / "preprocessor_config.json").unlink()
    out = tmp_path / "new" / "out"
    assert main(["push", str(run), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 2
    assert "missing preprocessor_config.json" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["run"]  # no out, no partial folder, no new/


def test_a_dry_run_into_a_file_is_refused(vit_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["push", str(vit_run), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "mine"


def test_auto_map_cannot_reach_outside_the_run_folder(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (tmp_path / "settings_secret.py").write_text("TOKEN = 'secret'")
    config = json.loads((run / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "../settings_secret.X"}
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    capsys.readouterr()  # the factory's "Writing model shards" bar
    assert main(["push", str(run), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 2
    err = capsys.readouterr().err
    assert "auto_map entry 'AutoConfig' = '../settings_secret.X'" in err and err.count("\n") == 1
    assert not out.exists()


def test_a_link_to_a_file_outside_the_run_folder_is_refused(tmp_path, capsys):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (tmp_path / "elsewhere.json").write_text("{}")
    (run / "eval_results.json").unlink()
    (run / "eval_results.json").symlink_to(tmp_path / "elsewhere.json")
    assert main(["push", str(run), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out")]) == 2
    assert "eval_results.json link(s) to files outside the run folder" in capsys.readouterr().err


@pytest.fixture
def recorded_hub(monkeypatch):
    """HfApi methods replaced by recorders; upload_folder keeps the listing and card of the folder it got."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        contents = {name: (folder / name).read_bytes() for name in _files(folder)}
        calls.append(("upload_folder", {**kwargs, "contents": contents}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return calls


def test_push_creates_the_repo_and_uploads_the_dry_run_folder_in_one_commit(vit_run, published, recorded_hub):
    url = hub.push_run(vit_run, REPO_ID, private=True, revision="v1", commit_message="first model")
    assert [name for name, _ in recorded_hub] == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in recorded_hub)
    assert create == {"repo_id": REPO_ID, "token": FAKE_TOKEN, "private": True, "exist_ok": True}
    assert branch == {"repo_id": REPO_ID, "branch": "v1", "exist_ok": True}
    assert upload["repo_id"] == REPO_ID and upload["revision"] == "v1" and upload["commit_message"] == "first model"
    assert set(upload["contents"]) == _files(published)
    assert b"/resolve/v1/examples/" in upload["contents"]["README.md"]
    assert not any(FAKE_TOKEN.encode() in data for data in upload["contents"].values())
    assert url == f"https://huggingface.co/{REPO_ID}/commit/abc"


def test_push_cli_defaults_to_main_without_a_branch(vit_run, recorded_hub, capsys):
    assert main(["push", str(vit_run), "--repo-id", REPO_ID]) == 0
    assert [name for name, _ in recorded_hub] == ["create_repo", "upload_folder"]
    assert recorded_hub[0][1]["private"] is False and recorded_hub[1][1]["revision"] is None
    assert f"{REPO_ID}/commit/abc" in capsys.readouterr().out


def test_push_refuses_a_folder_that_contains_the_token(tmp_path, recorded_hub):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    with (run / "run_config.yaml").open("a") as handle:
        handle.write(f"leaked: {FAKE_TOKEN}\n")
    with pytest.raises(hub.PushError, match="contains your Hub token") as excinfo:
        hub.push_run(run, REPO_ID)
    assert FAKE_TOKEN not in str(excinfo.value)
    assert [name for name, _ in recorded_hub] == []


def test_push_without_a_token_says_how_to_log_in(vit_run, monkeypatch, capsys):
    monkeypatch.setattr(hub, "get_token", lambda: None)
    assert main(["push", str(vit_run), "--repo-id", REPO_ID]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not logged in") and "hf auth login" in err and err.count("\n") == 1


def _run_push_subprocess(vit_run: Path, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.cli", "push", str(vit_run), "--repo-id", REPO_ID]
    environment = {**os.environ, "HF_TOKEN": FAKE_TOKEN, **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120, check=False)


def test_offline_push_fails_with_one_line(vit_run):
    result = _run_push_subprocess(vit_run, HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "offline" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr


def test_unreachable_hub_fails_with_one_line(vit_run):
    result = _run_push_subprocess(vit_run, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: upload to {REPO_ID} failed: cannot reach the Hub")
    assert result.stderr.count("\n") == 1 and FAKE_TOKEN not in result.stdout + result.stderr


# A subprocess that cannot import this project: a meta-path finder refuses "pipeline", and the test checks it.
_LOAD_WITHOUT_PROJECT = """
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

for folder, remote in zip(sys.argv[1::2], sys.argv[2::2]):
    trust = remote == "remote"
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=trust).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust)
    image = Image.open(folder + "/examples/00004296_000.png").convert("RGB")
    with torch.no_grad():
        logits = model(**processor(images=image, return_tensors="pt")).logits
    assert logits.shape == (1, 14), logits.shape
    assert model.config.problem_type == "multi_label_classification"
    print(type(model).__name__, model.config.id2label[13])
"""


def test_published_folders_load_without_this_project(published, published_cnn, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    args = [str(published), "local", str(published_cnn), "remote"]
    result = run_without_project(_LOAD_WITHOUT_PROJECT, *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == [
        "ViTForImageClassification Pneumothorax",
        "PaperCNNForImageClassification Pneumothorax",
    ]


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def _localise(snippet: str, folder: Path) -> str:
    """The snippet with the Hub repo and its example URLs replaced by the local published folder."""
    snippet = snippet.replace(f"https://huggingface.co/{REPO_ID}/resolve/main/", f"{folder}/")
    return snippet.replace(REPO_ID, str(folder))


@pytest.mark.parametrize("folder_fixture", ["published", "published_cnn"])
def test_card_python_snippets_run_against_the_published_folder(folder_fixture, request):
    folder = request.getfixturevalue(folder_fixture)
    blocks = _code_blocks((folder / "README.md").read_text(), "python")
    assert len(blocks) == 2
    for block in blocks:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(_localise(block, folder), "README.md", "exec"), {})
        lines = output.getvalue().splitlines()
        assert len(lines) == 14, output.getvalue()
        assert all(re.fullmatch(r"\w+\s+[01]\.\d{3}", line) for line in lines)


def test_card_cli_snippet_runs_against_the_published_folder(published, capsys):
    (command,) = _code_blocks((published / "README.md").read_text(), "bash")
    argv = shlex.split(_localise(textwrap.dedent(command), published).replace("path/to/images/", str(published)))
    assert argv[0] == "chestxray"
    assert main(argv[1:]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 + len(example_images())
