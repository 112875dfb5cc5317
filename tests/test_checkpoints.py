"""Checkpoints survive a crash at any point of a save, resuming picks the newest complete one, and no token is
written to disk. The crash tests kill a real training process (tests/crashing.py)."""

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from crashing import KillPoint, train_until_killed
from safetensors.torch import load_file
from training import argv, read_predictions
from transformers import TrainerControl, TrainerState, TrainingArguments

from pipeline.arguments import parse_args
from pipeline.checkpoints import (
    INCOMPLETE_SENTINEL,
    MARKER,
    CrashSafeCheckpoints,
    find_checkpoints,
    resolve_resume,
    write_marker,
)
from pipeline.train import main, run

TOKEN = "hf_CheckpointTestTokenThatMustNotBeWritten"
KILLED = -signal.SIGKILL
STEPS = 10  # 4 steps an epoch: checkpoints at 4, 8 and 10 (the last one is not an epoch's end)


def flags(dataset: Path, output_dir: Path) -> list[str]:
    return argv(
        dataset,
        output_dir,
        max_steps=STEPS,
        max_train_samples=64,
        max_eval_samples=64,
        per_device_train_batch_size=16,
        save_total_limit=3,
        greater_is_better="false",  # the worst validation AUROC is "best": the final model is not the last one
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset_dir, tmp_path_factory) -> Path:
    """The run every interrupted one must end as; given a Hub token, which it must not write anywhere."""
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(*parse_args([*flags(tiny_dataset_dir, output_dir), "--hub_token", TOKEN]))
    return output_dir


def global_step(run_dir: Path) -> int:
    return json.loads((run_dir / "trainer_state.json").read_text())["global_step"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=1e-6, msg=key)


def test_no_token_anywhere_in_the_run_folder(uninterrupted):
    files = [path for path in uninterrupted.rglob("*") if path.is_file()]
    assert sum(path.name == "training_args.bin" for path in files) == 4  # the run folder and 3 checkpoints
    assert [path for path in files if TOKEN.encode() in path.read_bytes()] == []


def test_killed_at_each_point_of_a_save_resumes_to_the_uninterrupted_model(
    uninterrupted, tiny_dataset_dir, tmp_path, capfd
):
    """One run killed five times, each at a different point of a save, then resumed to the end."""
    output_dir = tmp_path / "run"
    first = flags(tiny_dataset_dir, output_dir)
    resume = [*first, "--resume_from_checkpoint", "true"]

    # checkpoint-8's folder is created, none of its files written
    assert train_until_killed(first, KillPoint("PreTrainedModel", "save_pretrained", 2)) == KILLED
    assert list((output_dir / "checkpoint-8").iterdir()) == []
    # resumed from checkpoint-4: killed with checkpoint-8's model written, its optimizer not
    assert train_until_killed(resume, KillPoint("Trainer", "_save_optimizer_and_scheduler", 1)) == KILLED
    assert (
        "resuming from checkpoint-4, the newest complete checkpoint; skipped checkpoint-8 (no "
        in capfd.readouterr().out
    )
    assert (output_dir / "checkpoint-8" / "model.safetensors").is_file()
    # resumed from checkpoint-4: killed with all of checkpoint-8 written, before it is marked complete
    assert train_until_killed(resume, KillPoint("CallbackHandler", "on_save", 1)) == KILLED
    assert "resuming from checkpoint-4" in capfd.readouterr().out
    assert (output_dir / "checkpoint-8" / "trainer_state.json").is_file()
    # resumed from checkpoint-4: killed right after the last checkpoint is complete
    assert train_until_killed(resume, KillPoint("CallbackHandler", "on_save", 2, after=True)) == KILLED
    assert [c.step for c in find_checkpoints(output_dir) if c.problem is None] == [10, 8, 4]
    assert not (output_dir / "model.safetensors").exists()
    # the training had finished: killed after eval_results.json (write_results: train, then eval)
    assert train_until_killed(resume, KillPoint("RunFolder", "write_results", 2, after=True)) == KILLED
    assert "training had finished at step 10 (checkpoint-10): completing the run folder" in capfd.readouterr().out
    assert (output_dir / "eval_results.json").is_file() and not (output_dir / "test_results.json").exists()

    assert main(resume) == 0
    assert "training had finished at step 10" in capfd.readouterr().out
    assert global_step(output_dir) == STEPS
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == [
        "checkpoint-10",
        "checkpoint-4",
        "checkpoint-8",
    ]
    best = json.loads((uninterrupted / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert Path(best).name != "checkpoint-10"
    assert_same_weights(output_dir, uninterrupted)  # the best checkpoint
    assert_same_weights(output_dir / "checkpoint-10", uninterrupted / "checkpoint-10")
    for name in ("test_predictions.csv", "validation_predictions.csv"):
        np.testing.assert_allclose(
            read_predictions(output_dir / name)[1], read_predictions(uninterrupted / name)[1], rtol=1e-5
        )
    for name in ("thresholds.json", "test_results.json"):
        assert (output_dir / name).is_file(), name


def checkpoint(output_dir: Path, step: int, *, complete: bool) -> Path:
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        write_marker(folder, step)
    return folder


def test_explicit_incomplete_checkpoint_is_one_error_line(tiny_dataset_dir, tmp_path, capsys):
    output_dir = tmp_path / "run"
    checkpoint(output_dir, 5, complete=True)
    incomplete = checkpoint(output_dir, 10, complete=False)
    assert main([*argv(tiny_dataset_dir, output_dir), "--resume_from_checkpoint", str(incomplete)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: resume_from_checkpoint={incomplete} is incomplete")
    assert str(output_dir / "checkpoint-5") in err


def test_resume_takes_the_newest_complete_checkpoint_and_keeps_the_others(tmp_path, capsys):
    checkpoint(tmp_path, 5, complete=True)
    checkpoint(tmp_path, 10, complete=True)
    truncated = checkpoint(tmp_path, 15, complete=True)
    (truncated / "model.safetensors").write_bytes(b"wei")
    flagged = checkpoint(tmp_path, 20, complete=True)
    (flagged / INCOMPLETE_SENTINEL).touch()
    checkpoint(tmp_path, 25, complete=False)
    assert resolve_resume("true", tmp_path) == str(tmp_path / "checkpoint-10")
    out = capsys.readouterr().out
    assert out.startswith("resuming from checkpoint-10, the newest complete checkpoint; skipped checkpoint-25 (no ")
    assert "checkpoint-20 (marked incomplete by checkpoint-is-incomplete.txt" in out
    assert "checkpoint-15 (model.safetensors is 3 bytes, saved as 7)" in out
    assert len(list(tmp_path.glob("checkpoint-*"))) == 5


def test_only_incomplete_checkpoints_start_over(tmp_path, capsys):
    checkpoint(tmp_path, 5, complete=False)
    assert resolve_resume("true", tmp_path) is None
    assert "no complete checkpoint" in capsys.readouterr().out
    assert (tmp_path / "checkpoint-5" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint-5" / MARKER).exists()


def test_a_checkpoint_written_again_is_unmarked_until_its_save_completes(tmp_path):
    """Resumed from an older checkpoint, a run reaching step 10 again rewrites checkpoint-10 in place."""
    folder = checkpoint(tmp_path, 10, complete=True)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    CrashSafeCheckpoints().on_step_end(args, TrainerState(global_step=10), TrainerControl())
    assert not (folder / MARKER).exists()
    assert (folder / "model.safetensors").is_file()
