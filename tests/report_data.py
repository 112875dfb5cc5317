"""Generated test splits and run folders with planted predictions, for the tests of `chestxray compare`.

from report_data import make_cohort, save_dataset, write_run  # pytest puts tests/ on sys.path
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import Dataset, DatasetDict
from PIL import Image
from transformers import ConvNextImageProcessor, PreTrainedModel, ResNetConfig, ResNetForImageClassification

from pipeline.dataset import FEATURES
from pipeline.labels import FINDINGS, id2label, label2id

IMAGE_SIZE = 32


@dataclass
class Cohort:
    """A generated test split, one row per image; `risk` is the true probability each label was drawn with."""

    image_ids: list[str]
    patient_ids: np.ndarray
    risk: np.ndarray
    labels: np.ndarray
    sex: list[str]
    age: list[int | None]
    view: list[str]


def make_cohort(n_patients: int, images_per_patient: int, seed: int) -> Cohort:
    """Labels drawn from a uniform risk per image and finding. Patients alternate F/M, ages spread over 20–85
    (the first image's unknown), views alternate AP/PA by image."""
    rng = np.random.default_rng(seed)
    patient_ids = np.repeat(np.arange(1, n_patients + 1), images_per_patient)
    risk = rng.random((len(patient_ids), len(FINDINGS)))
    ages = [int(20 + (p * 7) % 66) for p in patient_ids]
    ages[0] = None
    return Cohort(
        image_ids=[f"{p:08d}_{k:03d}.png" for p in range(1, n_patients + 1) for k in range(images_per_patient)],
        patient_ids=patient_ids,
        risk=risk,
        labels=(rng.random(risk.shape) < risk).astype(float),
        sex=["F" if p % 2 else "M" for p in patient_ids],
        age=ages,
        view=["AP" if i % 2 else "PA" for i in range(len(patient_ids))],
    )


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8), mode="L")


def _split(cohort: Cohort, rows: list[int]) -> Dataset:
    return Dataset.from_dict(
        {
            "image": [_image(i) for i in rows],
            "labels": [cohort.labels[i].tolist() for i in rows],
            "findings": [[j for j in range(len(FINDINGS)) if cohort.labels[i, j]] for i in rows],
            "image_id": [cohort.image_ids[i] for i in rows],
            "patient_id": [int(cohort.patient_ids[i]) for i in rows],
            "age_years": [cohort.age[i] for i in rows],
            "sex": [cohort.sex[i] for i in rows],
            "view_position": [cohort.view[i] for i in rows],
            "follow_up": [0 for _ in rows],
        },
        features=FEATURES,
    )


def save_dataset(path: Path, cohort: Cohort) -> Path:
    """A DatasetDict whose test split is `cohort` (train/validation: two of its rows, unused by the report)."""
    DatasetDict(
        {
            "train": _split(cohort, [0]),
            "validation": _split(cohort, [1]),
            "test": _split(cohort, list(range(len(cohort.image_ids)))),
        }
    ).save_to_disk(str(path))
    return path


def write_run(
    run_dir: Path, image_ids: list[str], probs: np.ndarray, dataset: str | Path, *, results: dict | None = None
) -> Path:
    """A run folder with the contract's report inputs: predictions, run config, results, trainer state."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "test_predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *FINDINGS])
        writer.writerows([image_id, *(f"{p:.6g}" for p in row)] for image_id, row in zip(image_ids, probs, strict=True))
    config = {"model": {"pretrained": False}, "data": {"dataset_name_or_path": str(dataset)}, "training": {}}
    (run_dir / "run_config.yaml").write_text(yaml.safe_dump(config))
    defaults = {"train_runtime": 100.0, "train_samples_per_second": 10.0, "num_parameters": 1000, "train_loss": 0.3}
    (run_dir / "all_results.json").write_text(json.dumps({**defaults, **(results or {})}))
    history = [
        {"epoch": 0.5, "step": 1, "loss": 0.6},
        {"epoch": 1.0, "step": 2, "loss": 0.4},
        {"epoch": 1.0, "step": 2, "eval_loss": 0.45, "eval_auroc_mean": 0.6},
        {"epoch": 2.0, "step": 4, "loss": 0.3},
        {"epoch": 2.0, "step": 4, "eval_loss": 0.35, "eval_auroc_mean": 0.7},
    ]
    (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    return run_dir


def tiny_resnet(seed: int = 0) -> tuple[ResNetForImageClassification, ConvNextImageProcessor]:
    """A randomly initialised two-stage multi-label ResNet and the resize-then-crop processor ResNets ship with."""
    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=len(FINDINGS),
        id2label=id2label(),
        label2id=label2id(),
        problem_type="multi_label_classification",
    )
    return ResNetForImageClassification(config).eval(), ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIZE})


def save_model(run_dir: Path, model: PreTrainedModel, processor: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run_dir)
    processor.save_pretrained(run_dir)
    return run_dir
