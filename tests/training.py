"""A tiny real training run on CPU, shared by the tests of training and of what a run writes.

    from training import argv, read_predictions  # pytest puts tests/ on sys.path
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def argv(dataset: Path, output_dir: Path, *extra: str, **overrides) -> list[str]:
    """Flags for a tiny, fast CPU run on `dataset`."""
    values = {
        # The planted signal is where a blob sits, so the model must keep position: the paper's CNN
        # (flatten → dense) does; a global-pooling ResNet would not.
        "model_type": "paper_cnn",
        "image_size": 32,
        "dataset_name_or_path": str(dataset),
        "output_dir": str(output_dir),
        "use_cpu": "true",
        "num_train_epochs": 6,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "dataloader_num_workers": 0,
        "logging_steps": 5,
        "disable_tqdm": "true",
        "seed": 0,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))] + list(extra)


def read_predictions(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    with path.open() as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    return [row[0] for row in body], np.array([[float(v) for v in row[1:]] for row in body]), header[1:]
