"""Every number a run writes comes from where it says: recomputed here from the run folder's own files.

The checks go through the files a user gets (CSV, JSON, the saved model) and independent code (the 🤗
image-classification pipeline, the metric module), never through the training code's internals.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from datasets import load_from_disk
from training import read_predictions
from transformers import pipeline as hf_pipeline

from pipeline.labels import FINDINGS
from pipeline.metrics import choose_thresholds, compute_metrics

# The Trainer's bookkeeping, not metrics of the predictions.
NOT_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")


def split_of(dataset_dir, name: str):
    return load_from_disk(str(dataset_dir))[name]


def predictions(run_dir, name: str) -> tuple[list[str], np.ndarray]:
    image_ids, probs, header = read_predictions(run_dir / f"{name}_predictions.csv")
    assert header == list(FINDINGS)
    return image_ids, probs


def test_thresholds_are_chosen_on_the_published_validation_predictions(trained_run, tiny_dataset_dir):
    validation = split_of(tiny_dataset_dir, "validation")
    image_ids, probs = predictions(trained_run, "validation")
    assert image_ids == validation["image_id"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # findings with one class in the tiny split
        expected = choose_thresholds(probs, np.asarray(validation["labels"]), FINDINGS)
    assert json.loads((trained_run / "thresholds.json").read_text()) == expected


@pytest.mark.parametrize("split", ["validation", "test"])
def test_each_prediction_row_is_the_saved_models_sigmoid_score(trained_run, tiny_dataset_dir, split):
    """What the Hub widget would show for the image, through the checkpoint's own preprocessing."""
    dataset = split_of(tiny_dataset_dir, split)
    image_ids, probs = predictions(trained_run, split)
    assert image_ids == dataset["image_id"]
    classifier = hf_pipeline("image-classification", model=str(trained_run), device="cpu")
    outputs = classifier(list(dataset["image"]), top_k=len(FINDINGS))
    for row, output in enumerate(outputs):
        scores = {entry["label"]: entry["score"] for entry in output}
        np.testing.assert_allclose(probs[row], [scores[name] for name in FINDINGS], atol=1e-5)


@pytest.mark.parametrize(("split", "prefix"), [("validation", "eval"), ("test", "test")])
def test_every_metric_is_recomputed_from_the_csv_and_the_labels(trained_run, tiny_dataset_dir, split, prefix):
    results = json.loads((trained_run / f"{prefix}_results.json").read_text())
    thresholds = json.loads((trained_run / "thresholds.json").read_text()) if prefix == "test" else None
    _, probs = predictions(trained_run, split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = np.asarray(split_of(tiny_dataset_dir, split)["labels"])
        recomputed = compute_metrics(probs, labels, FINDINGS, thresholds)
    written = {k.removeprefix(f"{prefix}_"): v for k, v in results.items() if not k.endswith(NOT_METRICS)}
    assert set(written) == set(recomputed)
    assert written == pytest.approx(recomputed, abs=1e-6)
    assert "f1_macro_tuned" in written or prefix == "eval"


def test_validation_during_training_is_the_evaluation_of_the_saved_model(trained_run):
    """The best checkpoint's validation score, logged during training, is what the saved model scores again at
    the end: validation runs the evaluation transform, deterministically, not the training augmentation."""
    state = json.loads((trained_run / "trainer_state.json").read_text())
    best_step = int(state["best_model_checkpoint"].rsplit("-", 1)[1])
    logged = next(e for e in state["log_history"] if e.get("step") == best_step and "eval_auroc_mean" in e)
    final = json.loads((trained_run / "eval_results.json").read_text())
    for key in ("eval_auroc_mean", "eval_loss", "eval_accuracy", "eval_map"):
        assert final[key] == pytest.approx(logged[key], abs=1e-6), key
