"""Reading the report's inputs: the runs' folders (through `RunFolder`) and the dataset's test split."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset

from pipeline.dataset import finding_names, load_dataset_dict
from pipeline.report import ReportError
from pipeline.run_folder import RunFolder


@dataclass
class Run:
    """What the report reads from one run folder; `probs` are in the test split's image order once aligned."""

    name: str
    path: Path
    image_ids: list[str]
    probs: np.ndarray
    results: dict
    log_history: list[dict]


@dataclass
class TestSplit:
    """The test split's labels and metadata (images stay in `dataset`, decoded only for the explanations)."""

    image_ids: list[str]
    labels: np.ndarray
    patient_ids: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    view: np.ndarray
    names: list[str]
    dataset: Dataset = field(repr=False)


def read_run(path: str | Path, names: Sequence[str]) -> Run:
    """Predictions, results and log history of one run folder."""
    folder = RunFolder(Path(path))
    ids, probs = folder.predictions(names)
    return Run(folder.name, folder.path, ids, probs, folder.metrics(), folder.history())


def run_dataset(run_dirs: Sequence[str | Path]) -> str:
    """The dataset all runs were trained on, from their run_config.yaml."""
    found = {}
    for run_dir in run_dirs:
        found[str(run_dir)] = RunFolder(Path(run_dir)).config()["data"].get("dataset_name_or_path")
    named = set(found.values()) - {None}
    if len(named) != 1 or None in found.values():
        listing = "; ".join(f"{run}: {name}" for run, name in found.items())
        raise ReportError(f"cannot tell the dataset from run_config.yaml ({listing}); pass --dataset")
    return named.pop()


def load_test_split(name_or_path: str) -> TestSplit:
    """Labels and metadata of the dataset's `test` split (no image is decoded here)."""
    try:
        dataset_dict = load_dataset_dict(name_or_path)
    except OSError as error:  # a missing folder, or a Hub id that cannot be reached
        raise ReportError(f"cannot load dataset {name_or_path!r}: {error}") from error
    if "test" not in dataset_dict:
        raise ReportError(f"dataset {name_or_path} has no 'test' split (splits: {', '.join(dataset_dict)})")
    test = dataset_dict["test"]
    columns = test.select_columns(["image_id", "labels", "patient_id", "age_years", "sex", "view_position"])[:]
    age = np.array([np.nan if a is None else a for a in columns["age_years"]], dtype=float)
    return TestSplit(
        image_ids=list(columns["image_id"]),
        labels=np.asarray(columns["labels"], dtype=float).reshape(len(test), -1),
        patient_ids=np.asarray(columns["patient_id"]),
        sex=np.asarray(columns["sex"], dtype=object),
        age=age,
        view=np.asarray(columns["view_position"], dtype=object),
        names=finding_names(test),
        dataset=test,
    )


def align_predictions(run: Run, test: TestSplit) -> Run:
    """Reorder the run's predictions to the test split's image order; the two id sets must be equal."""
    position = {image_id: i for i, image_id in enumerate(run.image_ids)}
    if len(position) != len(run.image_ids):
        duplicates = sorted(i for i, count in Counter(run.image_ids).items() if count > 1)
        raise ReportError(f"{run.path}/test_predictions.csv: duplicate image ids, e.g. {', '.join(duplicates[:3])}")
    extra = sorted(set(position) - set(test.image_ids))
    missing = [i for i in test.image_ids if i not in position]
    if extra or missing:
        raise ReportError(
            f"{run.path}/test_predictions.csv does not match the dataset's test split: "
            f"{len(extra)} image ids not in the split (e.g. {', '.join(extra[:3]) or '-'}), "
            f"{len(missing)} test images without a prediction (e.g. {', '.join(missing[:3]) or '-'})"
        )
    order = [position[image_id] for image_id in test.image_ids]
    return dataclasses.replace(run, image_ids=list(test.image_ids), probs=run.probs[order])
