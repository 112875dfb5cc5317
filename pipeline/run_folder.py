"""The run folder: the one place that reads and writes a training run's files.

Training writes through `RunFolder`; Hub cards, `push`, `predict`, the report and the study read through it.
The Trainer writes its checkpoints, `trainer_state.json` and `training_args.bin` itself.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.errors import UserError
from pipeline.published import OFFICIAL_TEST_IMAGES

RUN_CONFIG = "run_config.yaml"
THRESHOLDS = "thresholds.json"
ALL_RESULTS = "all_results.json"
EVAL_RESULTS = "eval_results.json"
# Written last of all (after the test predictions): its presence marks a finished run (`RunFolder.is_finished`).
TEST_RESULTS = "test_results.json"
TEST_SPLIT = "test_split.json"
TRAINER_STATE = "trainer_state.json"
TEST_PREDICTIONS = "test_predictions.csv"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
MODEL_CONFIG = "config.json"
PROCESSOR_CONFIG = "preprocessor_config.json"
PREDICTIONS = {"test": TEST_PREDICTIONS, "eval": VALIDATION_PREDICTIONS}
REQUIRED_TEST_METRICS = ("test_auroc_mean", "test_accuracy", "test_f1_macro")


class RunFolderError(UserError, ValueError):
    """A run folder lacks a file or a value, or holds a broken one; the message names which."""


@dataclass(frozen=True)
class TestSplitRecord:
    """How much of NIH's official test list a run was evaluated on: `images` of `official_images`, and
    `max_eval_samples` when that setting cut the split. Only the whole list gives comparable numbers."""

    images: int
    official_images: int = OFFICIAL_TEST_IMAGES
    max_eval_samples: int | None = None

    @property
    def complete(self) -> bool:
        return self.images == self.official_images

    @property
    def truncated(self) -> bool:
        return self.max_eval_samples is not None and self.images >= self.max_eval_samples

    def describe(self) -> str:
        """The split in words, e.g. "12 of the 25,596 official test images, cut by max_eval_samples"."""
        if self.complete:
            return f"all {self.images:,} official test images"
        cut = ", cut by max_eval_samples" if self.truncated else ""
        return f"{self.images:,} of the {self.official_images:,} official test images{cut}"


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunFolderError(f"{path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from exc


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A hidden temporary file beside `path` to write, renamed over `path` when the block ends: a kill never
    leaves half a file at `path`."""
    partial = path.with_name(f".{path.name}.partial")
    yield partial
    os.replace(partial, path)


def write_text_atomically(path: Path, text: str) -> None:
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_json(path: Path, data: dict, **dump_options: Any) -> None:
    write_text_atomically(path, json.dumps(data, **{"indent": 2, **dump_options}) + "\n")


def read_thresholds(path: Path, labels: Sequence[str]) -> dict[str, float]:
    """thresholds.json: one threshold in [0, 1] for each of `labels`, in their order."""
    thresholds = read_json(path)
    if (
        not isinstance(thresholds, dict)
        or set(thresholds) != set(labels)
        or not all(isinstance(value, int | float) and 0 <= value <= 1 for value in thresholds.values())
    ):
        raise RunFolderError(
            f"{path}: expected one threshold between 0 and 1 for each of the model's findings: {', '.join(labels)}"
        )
    return {name: float(thresholds[name]) for name in labels}


def read_predictions(path: Path, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """`*_predictions.csv` → image ids and an (N, F) probability array, checking the header and values."""
    if not path.is_file():
        raise RunFolderError(f"{path.parent}: missing {path.name}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    expected = ["image_id", *names]
    if not rows or rows[0] != expected:
        raise RunFolderError(
            f"{path}: header must be {','.join(expected)}; got {','.join(rows[0]) if rows else 'nothing'}"
        )
    ids, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            probs = [float(value) for value in row[1:]]
        except ValueError as error:
            raise RunFolderError(f"{path}, line {line}: {error}") from error
        if len(probs) != len(names) or not all(0.0 <= p <= 1.0 for p in probs):
            raise RunFolderError(f"{path}, line {line}: expected {len(names)} probabilities in [0, 1], got {row[1:]}")
        ids.append(row[0])
        values.append(probs)
    return ids, np.asarray(values, dtype=float).reshape(len(ids), len(names))


def write_predictions(path: Path, image_ids: Sequence[str], probs: np.ndarray, names: Sequence[str]) -> None:
    with replacing(path) as partial, partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *names])
        for image_id, row in zip(image_ids, probs, strict=True):
            writer.writerow([image_id, *map(repr, row.tolist())])  # full float64 precision: round-trips exactly


def _count_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder: its paths, what it holds, and the writers training uses."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    # ---- reading

    def is_finished(self) -> bool:
        """Whether training wrote every file: test_results.json comes last, after the test predictions."""
        return self.has(TEST_RESULTS) and self.has(TEST_PREDICTIONS)

    def config(self) -> dict[str, Any]:
        """`run_config.yaml`: the `model`, `data` and `training` sections."""
        path = self.file(RUN_CONFIG)
        if not path.is_file():
            raise RunFolderError(f"{path} not found; is {self.path} a run folder written by training?")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RunFolderError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        missing = [key for key in ("model", "data", "training") if not isinstance(config.get(key), dict)]
        if missing:
            raise RunFolderError(f"{path}: missing section(s) {', '.join(missing)}")
        return config

    def metrics(self) -> dict[str, Any]:
        """all_results.json (train, validation and test metrics); empty when the run has none yet."""
        return read_json(self.file(ALL_RESULTS)) if self.has(ALL_RESULTS) else {}

    def test_metrics(self) -> dict[str, float]:
        """The `test_*` metrics (test_results.json, else the test_* keys of all_results.json)."""
        path = self.file(TEST_RESULTS if self.has(TEST_RESULTS) else ALL_RESULTS)
        metrics = {key: value for key, value in read_json(path).items() if key.startswith("test_")}
        missing = [key for key in REQUIRED_TEST_METRICS if key not in metrics]
        if missing:
            raise RunFolderError(f"{path}: no {', '.join(missing)}; was the run evaluated on the test split?")
        return metrics

    def thresholds(self, labels: Sequence[str]) -> dict[str, float] | None:
        """Per-finding thresholds chosen on validation; None when the folder has none."""
        return read_thresholds(self.file(THRESHOLDS), labels) if self.has(THRESHOLDS) else None

    def predictions(self, names: Sequence[str], split: str = "test") -> tuple[list[str], np.ndarray]:
        return read_predictions(self.file(PREDICTIONS[split]), names)

    def history(self) -> list[dict]:
        """The Trainer's log history (trainer_state.json); empty when the folder has none."""
        return read_json(self.file(TRAINER_STATE)).get("log_history", []) if self.has(TRAINER_STATE) else []

    def model_config(self) -> dict[str, Any]:
        return read_json(self.file(MODEL_CONFIG))

    def processor_config(self) -> dict[str, Any]:
        return read_json(self.file(PROCESSOR_CONFIG))

    def test_split(self) -> TestSplitRecord | None:
        """What the run was evaluated on (test_split.json; for older runs, counted from the test predictions)."""
        if self.has(TEST_SPLIT):
            record = read_json(self.file(TEST_SPLIT))
            try:
                return TestSplitRecord(**record)
            except TypeError as exc:
                raise RunFolderError(f"{self.file(TEST_SPLIT)}: unexpected content ({exc})") from exc
        if not self.has(TEST_PREDICTIONS):
            return None
        max_eval = self.config()["data"].get("max_eval_samples") if self.has(RUN_CONFIG) else None
        return TestSplitRecord(_count_rows(self.file(TEST_PREDICTIONS)), max_eval_samples=max_eval)

    # ---- writing (training, on the main process only)

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomically(self.file(RUN_CONFIG), yaml.safe_dump(config, sort_keys=False))

    def write_thresholds(self, thresholds: dict[str, float]) -> None:
        write_json(self.file(THRESHOLDS), thresholds)

    def write_test_split(self, record: TestSplitRecord) -> None:
        write_json(self.file(TEST_SPLIT), asdict(record))

    def write_predictions(self, split: str, image_ids: Sequence[str], probs: np.ndarray, names: Sequence[str]) -> None:
        write_predictions(self.file(PREDICTIONS[split]), image_ids, probs, names)

    def results(self, split: str) -> dict[str, Any]:
        """`{split}_results.json`, or nothing where the run did not get so far."""
        path = self.file(f"{split}_results.json")
        return read_json(path) if path.is_file() else {}

    def write_results(self, split: str, metrics: dict[str, Any]) -> None:
        """`{split}_results.json` and all_results.json, as `Trainer.save_metrics` writes them, but all_results first:
        test_results.json must be the run's last file."""
        write_json(self.file(ALL_RESULTS), {**self.metrics(), **metrics}, indent=4, sort_keys=True)
        write_json(self.file(f"{split}_results.json"), metrics, indent=4, sort_keys=True)
