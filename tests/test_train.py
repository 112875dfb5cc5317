"""Training end to end on CPU: the run folder, learning a planted signal, resuming, two processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import load_from_disk
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from training import argv, read_predictions
from transformers import AutoModelForImageClassification, TrainerCallback

from pipeline.arguments import parse_args
from pipeline.checkpoints import find_checkpoints
from pipeline.labels import FINDINGS
from pipeline.train import main, positive_weights, run, weighted_bce_loss

REPO = Path(__file__).parents[1]


def test_run_folder_is_complete(trained_run, tiny_dataset_dir):
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "run_config.yaml",
        "all_results.json",
        "eval_results.json",
        "test_results.json",
        "thresholds.json",
        "test_predictions.csv",
        "validation_predictions.csv",
        "trainer_state.json",
    ):
        assert (trained_run / name).is_file(), name
    config = json.loads((trained_run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(14)] == list(FINDINGS)
    assert set(json.loads((trained_run / "thresholds.json").read_text())) == set(FINDINGS)
    run_config = yaml.safe_load((trained_run / "run_config.yaml").read_text())
    assert run_config["data"]["dataset_name_or_path"] == str(tiny_dataset_dir)
    history = json.loads((trained_run / "trainer_state.json").read_text())["log_history"]
    assert sum("eval_auroc_mean" in entry for entry in history) == 6  # one validation per epoch
    results = json.loads((trained_run / "all_results.json").read_text())
    assert {"train_runtime", "num_parameters", "eval_auroc_mean", "test_auroc_mean", "test_f1_macro_tuned"} <= set(
        results
    )


def test_learns_the_planted_signal(trained_run, tiny_dataset_dir):
    """The test metrics are real: recomputed from the saved predictions and the dataset's labels."""
    test = load_from_disk(str(tiny_dataset_dir))["test"]
    image_ids, probs, names = read_predictions(trained_run / "test_predictions.csv")
    assert names == list(FINDINGS)
    assert image_ids == test["image_id"]  # exactly one row per test image, in dataset order
    labels = np.asarray(test["labels"])
    defined = [j for j in range(14) if 0 < labels[:, j].sum() < len(labels)]
    aurocs = [roc_auc_score(labels[:, j], probs[:, j]) for j in defined]
    results = json.loads((trained_run / "test_results.json").read_text())
    assert results["test_auroc_mean"] == pytest.approx(np.mean(aurocs), abs=1e-4)
    assert np.mean(aurocs) >= 0.9


def test_best_checkpoint_is_the_saved_model(trained_run):
    state = json.loads((trained_run / "trainer_state.json").read_text())
    best = max(e["eval_auroc_mean"] for e in state["log_history"] if "eval_auroc_mean" in e)
    assert state["best_metric"] == pytest.approx(best)
    model = AutoModelForImageClassification.from_pretrained(trained_run)
    assert model.config.num_labels == 14


def test_existing_run_is_not_overwritten(trained_run, tiny_dataset_dir, capsys):
    before = (trained_run / "test_results.json").read_text()
    assert main(argv(tiny_dataset_dir, trained_run)) == 2
    assert "not empty" in capsys.readouterr().err
    assert (trained_run / "test_results.json").read_text() == before


class Interrupt(Exception):
    pass


class InterruptAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Interrupt(f"interrupted at step {state.global_step}")


def test_interrupted_run_resumes(tiny_dataset_dir, tmp_path):
    flags = argv(tiny_dataset_dir, tmp_path / "run", num_train_epochs=2, max_train_samples=64, max_eval_samples=64)
    with pytest.raises(Interrupt, match="step 2"):
        run(*parse_args(flags), callbacks=[InterruptAfterFirstSave()])
    assert not (tmp_path / "run" / "test_results.json").exists()
    run(*parse_args([*flags, "--resume_from_checkpoint", "true"]))
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # The resumed run started from step 2's checkpoint: its log holds the first epoch's evaluation.
    assert [e["epoch"] for e in state["log_history"] if "eval_auroc_mean" in e] == [1.0, 2.0]
    assert (tmp_path / "run" / "test_results.json").is_file()


def test_pos_weight_is_negatives_over_positives():
    labels = np.array([[1, 0], [0, 0], [0, 0], [1, 0]], dtype=np.float32)
    assert positive_weights(labels).tolist() == [1.0, 1.0]
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 0]], dtype=np.float32)
    assert positive_weights(labels).tolist() == [3.0, 1.0]


def test_weighted_loss_is_torch_bce_with_pos_weight():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 14), (torch.rand(8, 14) > 0.7).float()
    pos_weight = torch.rand(14) * 5
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, labels)
    assert torch.allclose(weighted_bce_loss(pos_weight)({"logits": logits}, labels), expected)


def test_auto_pos_weight_scales_the_loss_by_the_class_balance(tiny_dataset_dir, tmp_path, reference_loss):
    """Near p = 0.5, weighted BCE is ln 2 · (w·p + 1 - p) per finding (w = negatives/positives, p = positive
    fraction) against plain BCE's ln 2: the loss ratio is mean(2(1 - p), or 1 without positives)."""
    weighted = train_loss(tiny_dataset_dir, tmp_path / "run", loss_pos_weight="auto")
    labels = np.asarray(load_from_disk(str(tiny_dataset_dir))["train"]["labels"])
    positive = labels.mean(axis=0)
    expected_ratio = np.mean(np.where(positive > 0, 2 * (1 - positive), 1.0))
    assert weighted / reference_loss == pytest.approx(expected_ratio, rel=0.1)


def train_loss(dataset: Path, output_dir: Path, **overrides) -> float:
    run(*parse_args(argv(dataset, output_dir, num_train_epochs=1, learning_rate=1e-6, **overrides)))
    return json.loads((output_dir / "all_results.json").read_text())["train_loss"]


@pytest.fixture(scope="module")
def reference_loss(tiny_dataset_dir, tmp_path_factory) -> float:
    """Mean training loss of one epoch, batch 32, one process, a learning rate too small to learn."""
    return train_loss(tiny_dataset_dir, tmp_path_factory.mktemp("reference") / "run")


def test_gradient_accumulation_keeps_the_loss_scale(tiny_dataset_dir, tmp_path, reference_loss):
    accumulated = train_loss(
        tiny_dataset_dir, tmp_path / "run", per_device_train_batch_size=16, gradient_accumulation_steps=2
    )
    assert accumulated == pytest.approx(reference_loss, rel=0.1)


def test_push_to_hub_publishes_the_finished_run_once(tiny_dataset_dir, tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr("pipeline.train.get_token", lambda: "hf_fake")
    monkeypatch.setattr("pipeline.train.push_run", lambda run_dir, repo_id, **_: pushed.append((run_dir, repo_id)))
    output_dir = tmp_path / "run"
    run(*parse_args(argv(tiny_dataset_dir, output_dir, num_train_epochs=1, push_to_hub="true", hub_model_id="o/m")))
    assert pushed == [(output_dir, "o/m")]
    assert (output_dir / "test_results.json").is_file()


def test_push_to_hub_without_token_fails_before_training(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pipeline.train.get_token", lambda: None)
    flags = argv(tiny_dataset_dir, tmp_path / "run", push_to_hub="true", hub_model_id="o/m")
    assert main(flags) == 2
    assert "token" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_process_distributed_training(tiny_dataset_dir, tmp_path, reference_loss):
    """torchrun with 2 CPU processes (gloo): both train, each test image is predicted exactly once, and the
    saved metrics are those of the saved predictions, at the loss scale of one process."""
    output_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(REPO / "recipes" / "convnet.py"),
        *argv(tiny_dataset_dir, output_dir, num_train_epochs=1, learning_rate=1e-6, per_device_train_batch_size=16),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["world_size"] == 2
    assert results["train_loss"] == pytest.approx(reference_loss, rel=0.1)  # not doubled by the 2 processes
    test = load_from_disk(str(tiny_dataset_dir))["test"]
    image_ids, probs, _ = read_predictions(output_dir / "test_predictions.csv")
    assert image_ids == test["image_id"]
    labels = np.asarray(test["labels"])
    defined = [j for j in range(14) if 0 < labels[:, j].sum() < len(labels)]
    recomputed = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in defined])
    assert results["test_auroc_mean"] == pytest.approx(recomputed, abs=1e-4)
    # 2 processes × 16 images per step: half the steps one process would need for the same epoch.
    train_size = len(load_from_disk(str(tiny_dataset_dir))["train"])
    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == -(-train_size // 32)
    # Marked complete by the main process after both had written their part.
    assert [c.problem for c in find_checkpoints(output_dir)] == [None]


def test_learns_with_augmentation_on_the_device(tiny_dataset_dir, tmp_path):
    """Workers decode only and the batch is augmented in the training step: same learning as the default."""
    run(*parse_args(argv(tiny_dataset_dir, tmp_path / "run", augment_on_device="true")))
    assert json.loads((tmp_path / "run" / "test_results.json").read_text())["test_auroc_mean"] >= 0.9


TINY_VIT = {
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def vit_argv(dataset: Path, output_dir: Path, **overrides) -> list[str]:
    """A tiny ViT: transformers renames its checkpoint keys on load, which the Trainer's reloads must survive."""
    return argv(dataset, output_dir, model_type="vit", config_overrides=json.dumps(TINY_VIT), **overrides)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_best_vit_checkpoint_is_restored_whole(tiny_dataset_dir, tmp_path):
    """Picking the *worst* validation AUROC makes the first checkpoint the best, so the final model must equal
    checkpoint 1 in every tensor, encoder layers included, and differ from the last checkpoint."""
    output_dir = tmp_path / "run"
    run(*parse_args(vit_argv(tiny_dataset_dir, output_dir, num_train_epochs=3, greater_is_better="false")))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    # save_total_limit=2 keeps the best and the last checkpoint.
    first, last = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert Path(state["best_model_checkpoint"]).name == first.name
    final, best = tensors(output_dir), tensors(first)
    assert final.keys() == best.keys()
    assert all(torch.equal(final[key], best[key]) for key in final)
    assert not all(torch.equal(final[key], tensors(last)[key]) for key in final)


def test_resumed_vit_run_equals_an_uninterrupted_one(tiny_dataset_dir, tmp_path):
    flags = vit_argv(tiny_dataset_dir, tmp_path / "whole", num_train_epochs=2, max_train_samples=64)
    run(*parse_args(flags))
    interrupted = vit_argv(tiny_dataset_dir, tmp_path / "resumed", num_train_epochs=2, max_train_samples=64)
    with pytest.raises(Interrupt):
        run(*parse_args(interrupted), callbacks=[InterruptAfterFirstSave()])
    run(*parse_args([*interrupted, "--resume_from_checkpoint", "true"]))
    whole, resumed = tensors(tmp_path / "whole"), tensors(tmp_path / "resumed")
    assert all(torch.allclose(whole[key], resumed[key]) for key in whole)


def test_missing_dataset_is_one_error_line(tmp_path, capsys):
    assert main(argv(tmp_path / "no_such_dataset", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_dataset" in err and "Traceback" not in err
