"""Build a small but real training run folder (the contract's layout) for tests of hub, predict and report.

The model is a real `ViTForImageClassification` (32×32 inputs, 2 layers) saved with `save_pretrained`, so every
consumer of a run folder can load it, run it and publish it. The metrics are plausible random numbers, seeded.

    from run_folder_factory import make_run_folder  # pytest puts tests/ on sys.path
    run_dir = make_run_folder(tmp_path / "run", pretrained=True, seed=0)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import PreTrainedModel, ViTConfig, ViTForImageClassification, ViTImageProcessor

from pipeline.arguments import DataArguments, ModelArguments, resolved_config
from pipeline.labels import FINDINGS, id2label, label2id
from pipeline.paper_cnn import PaperCNNConfig, PaperCNNForImageClassification
from pipeline.published import OFFICIAL_TEST_IMAGES
from pipeline.training_arguments import ChestXrayTrainingArguments

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "pipeline" / "assets" / "nih_sample"
BASE_MODEL = "google/vit-base-patch16-224-in21k"
DATASET_ID = "example-org/nih-chestxray14"
# A finding with one class only in a small test split has no AUROC: its key is absent from the metrics.
UNDEFINED_FINDING = "Hernia"


def tiny_model(kind: str = "vit", seed: int = 0, image_size: int = 32) -> tuple[PreTrainedModel, ViTImageProcessor]:
    """A randomly initialised multi-label model over the 14 findings ("vit", or the paper's CNN "paper_cnn",
    whose config gets an `auto_map` and whose code `save_pretrained` copies) and its image processor."""
    torch.manual_seed(seed)
    labels = {
        "num_labels": len(FINDINGS),
        "id2label": id2label(),
        "label2id": label2id(),
        "problem_type": "multi_label_classification",
    }
    if kind == "paper_cnn":
        config = PaperCNNConfig(image_size=image_size, conv_channels=[4, 8], hidden_size=16, **labels)
        model = PaperCNNForImageClassification(config)
    else:
        config = ViTConfig(
            image_size=image_size,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **labels,
        )
        model = ViTForImageClassification(config)
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return model.eval(), processor


def fake_metrics(rng: np.random.Generator, prefix: str = "test") -> dict[str, float]:
    """Plausible metrics under the contract's names, with `prefix_` as the Trainer writes them."""
    per_finding = {f"auroc_{name}": float(rng.uniform(0.6, 0.92)) for name in FINDINGS if name != UNDEFINED_FINDING}
    metrics = {
        "loss": float(rng.uniform(0.15, 0.2)),
        "auroc_mean": float(np.mean(list(per_finding.values()))),
        **per_finding,
        "auroc_micro": float(rng.uniform(0.85, 0.9)),
        "accuracy": float(rng.uniform(0.92, 0.95)),
        "accuracy_all_negative": 0.9,
        "f1_macro": float(rng.uniform(0.05, 0.2)),
        "f1_macro_tuned": float(rng.uniform(0.25, 0.35)),
        "map": float(rng.uniform(0.2, 0.3)),
    }
    return {f"{prefix}_{key}": value for key, value in metrics.items()}


def _write_predictions(path: Path, image_ids: list[str], rng: np.random.Generator) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *FINDINGS])
        for image_id in image_ids:
            writer.writerow([image_id, *(f"{p:.6f}" for p in rng.uniform(0, 1, len(FINDINGS)))])


def _run_config(run_dir: Path, kind: str, pretrained: bool, image_size: int) -> dict:
    """run_config.yaml as training writes it (`resolved_config` of the three argument dataclasses)."""
    model_args = (
        ModelArguments(model_name_or_path=BASE_MODEL, pretrained=True, image_size=image_size)
        if pretrained
        else ModelArguments(model_type=kind, image_size=image_size)
    )
    data_args = DataArguments(dataset_name_or_path=DATASET_ID, crop_scale_min=0.8, rotation_degrees=7.0)
    training_args = ChestXrayTrainingArguments(
        output_dir=str(run_dir),
        use_cpu=True,
        dataloader_num_workers=0,
        learning_rate=5e-5,
        num_train_epochs=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=2,
        optim="adamw_torch",
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        seed=42,
        report_to="none",
    )
    return resolved_config(model_args, data_args, training_args)


def _trainer_state(rng: np.random.Generator, epochs: int = 3, steps_per_epoch: int = 2) -> dict:
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        for step in range(steps_per_epoch):
            global_step = (epoch - 1) * steps_per_epoch + step + 1
            history.append(
                {
                    "epoch": global_step / steps_per_epoch,
                    "step": global_step,
                    "loss": float(rng.uniform(0.15, 0.7)),
                    "learning_rate": 5e-5,
                }
            )
        history.append(
            {
                "epoch": float(epoch),
                "step": epoch * steps_per_epoch,
                "eval_loss": float(rng.uniform(0.15, 0.3)),
                "eval_auroc_mean": float(rng.uniform(0.6, 0.8)),
            }
        )
    return {
        "log_history": history,
        "global_step": epochs * steps_per_epoch,
        "num_train_epochs": epochs,
        "best_metric": max(h["eval_auroc_mean"] for h in history if "eval_auroc_mean" in h),
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def make_run_folder(
    run_dir: Path,
    *,
    model: str = "vit",
    pretrained: bool = True,
    seed: int = 0,
    image_size: int = 32,
    with_checkpoint: bool = True,
    test_images: int | None = OFFICIAL_TEST_IMAGES,
) -> Path:
    """Write a complete run folder at `run_dir` for a `model` ("vit" or "paper_cnn", see `tiny_model`).

    `pretrained` says whether run_config.yaml names a base checkpoint; `with_checkpoint` adds a Trainer
    checkpoint folder (with optimizer state) that must never be published. `test_images` is what test_split.json
    records the run was evaluated on (the official list's size: a full run); None writes no test_split.json."""
    kind = model
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    model, processor = tiny_model(kind, seed, image_size)
    model.save_pretrained(run_dir)
    processor.save_pretrained(run_dir)
    (run_dir / "run_config.yaml").write_text(
        yaml.safe_dump(_run_config(run_dir, kind, pretrained, image_size), sort_keys=False)
    )
    eval_metrics, test = fake_metrics(rng, "eval"), fake_metrics(rng, "test")
    train = {
        "train_runtime": 12.5,
        "train_samples_per_second": 3.2,
        "train_loss": 0.31,
        "num_parameters": model.num_parameters(),
        "epoch": 3.0,
    }
    _write_json(run_dir / "all_results.json", {**train, **eval_metrics, **test})
    _write_json(run_dir / "eval_results.json", eval_metrics)
    _write_json(run_dir / "test_results.json", test)
    _write_json(run_dir / "thresholds.json", {name: round(float(rng.uniform(0.1, 0.6)), 4) for name in FINDINGS})
    test_ids = (SAMPLE_ROOT / "test_list.txt").read_text().split()
    validation_ids = (SAMPLE_ROOT / "train_val_list.txt").read_text().split()[:4]
    _write_predictions(run_dir / "test_predictions.csv", test_ids, rng)
    _write_predictions(run_dir / "validation_predictions.csv", validation_ids, rng)
    _write_json(run_dir / "trainer_state.json", _trainer_state(rng))
    if test_images is not None:
        _write_json(run_dir / "test_split.json", {"images": test_images, "official_images": OFFICIAL_TEST_IMAGES})
    if with_checkpoint:
        checkpoint = run_dir / "checkpoint-6"
        model.save_pretrained(checkpoint)
        torch.save({"state": {}}, checkpoint / "optimizer.pt")
    return run_dir
