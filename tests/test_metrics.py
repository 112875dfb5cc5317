import json
import shutil
import warnings

import numpy as np
import pytest
from isolation import run_without_project
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from transformers import EvalPrediction

from pipeline import metrics
from pipeline.evaluate_metric.chestxray14.chestxray14 import CHESTXRAY14_FINDINGS
from pipeline.labels import FINDINGS
from pipeline.metrics import (
    EVALUATE_METRIC_DIR,
    choose_thresholds,
    compute_metrics,
    make_compute_metrics,
    sigmoid,
)

NAMES = list(FINDINGS)


@pytest.fixture
def arrays() -> tuple[np.ndarray, np.ndarray]:
    """Labels with a per-finding prevalence and scores that carry some signal."""
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 14)) < np.linspace(0.05, 0.5, 14)).astype(np.float32)
    probs = np.clip(0.35 * labels + 0.65 * rng.random((200, 14)), 0, 1)
    return probs, labels


def test_matches_sklearn(arrays):
    probs, labels = arrays
    metrics = compute_metrics(probs, labels, NAMES)
    per_finding = [roc_auc_score(labels[:, j], probs[:, j]) for j in range(14)]
    for j, name in enumerate(NAMES):
        assert metrics[f"auroc_{name}"] == pytest.approx(per_finding[j])
    assert metrics["auroc_mean"] == pytest.approx(np.mean(per_finding))
    assert metrics["auroc_micro"] == pytest.approx(roc_auc_score(labels.ravel(), probs.ravel()))
    assert metrics["accuracy"] == pytest.approx(np.mean((probs >= 0.5) == labels))
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, probs >= 0.5, average="macro", zero_division=0))
    assert metrics["map"] == pytest.approx(average_precision_score(labels, probs, average="macro"))
    assert "f1_macro_tuned" not in metrics


def test_accuracy_all_negative_is_the_negative_rate():
    labels = np.zeros((4, 14))
    labels[0, :7] = 1
    labels[1, 0] = 1
    probs = np.full((4, 14), 0.1)
    with pytest.warns(UserWarning, match="Hernia"):
        metrics = compute_metrics(probs, labels, NAMES)
    assert metrics["accuracy_all_negative"] == pytest.approx(1 - 8 / 56)
    assert metrics["accuracy"] == metrics["accuracy_all_negative"]


def test_undefined_findings_are_left_out_with_a_warning(arrays):
    probs, labels = arrays
    labels[:, 2] = 0  # Consolidation: no positives
    labels[:, 7] = 1  # Hernia: no negatives
    with pytest.warns(UserWarning, match="Consolidation, Hernia"):
        metrics = compute_metrics(probs, labels, NAMES, thresholds=dict.fromkeys(NAMES, 0.5))
    assert "auroc_Consolidation" not in metrics and "auroc_Hernia" not in metrics
    defined = [j for j in range(14) if j not in (2, 7)]
    assert metrics["auroc_mean"] == pytest.approx(np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in defined]))
    assert metrics["map"] == pytest.approx(average_precision_score(labels[:, defined], probs[:, defined]))
    assert metrics["f1_macro_tuned"] == pytest.approx(metrics["f1_macro"])


def test_no_defined_finding_gives_nan_means_not_a_crash():
    with pytest.warns(UserWarning):
        metrics = compute_metrics(np.full((3, 14), 0.2), np.zeros((3, 14)), NAMES)
    assert all(np.isnan(metrics[key]) for key in ("auroc_mean", "auroc_micro", "f1_macro", "map"))
    assert metrics["accuracy"] == 1.0
    assert not any(key.startswith("auroc_") and key[6:] in NAMES for key in metrics)


def test_bad_inputs_are_rejected_clearly(arrays):
    probs, labels = arrays
    with pytest.raises(ValueError, match="apply a sigmoid"):
        compute_metrics(probs * 10 - 5, labels, NAMES)
    with pytest.raises(ValueError, match="0/1"):
        compute_metrics(probs, labels * 2, NAMES)
    with pytest.raises(ValueError, match=r"\(N, 14\)"):
        compute_metrics(probs[:, :13], labels[:, :13], NAMES)
    with pytest.raises(KeyError, match="Atelectasis"):
        compute_metrics(probs, labels, NAMES, thresholds={"Cardiomegaly": 0.5})


@pytest.mark.filterwarnings("ignore:metrics undefined")
def test_choose_thresholds_maximise_f1(arrays, caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_logged", set())
    probs, labels = arrays
    labels[:, 5] = 0
    thresholds = choose_thresholds(probs, labels, NAMES)
    assert "Emphysema" in caplog.text
    assert thresholds["Emphysema"] == 0.5
    for j, name in enumerate(NAMES):
        if j == 5:
            continue
        best = f1_score(labels[:, j], probs[:, j] >= thresholds[name])
        # No threshold among the observed scores does better.
        assert all(f1_score(labels[:, j], probs[:, j] >= t) <= best + 1e-12 for t in np.unique(probs[:, j]))
    tuned = compute_metrics(probs, labels, NAMES, thresholds)["f1_macro_tuned"]
    assert tuned > compute_metrics(probs, labels, NAMES)["f1_macro"]



def test_thresholds_sit_halfway_between_adjacent_scores(arrays):
    """On a score, a threshold flips its decision when the score is rounded (a 6-digit CSV); between two, not."""
    probs, labels = arrays
    thresholds = choose_thresholds(probs, labels, NAMES)
    for j, name in enumerate(NAMES):
        scores = np.unique(np.concatenate([[0.0], probs[:, j]]))
        above = int(np.searchsorted(scores, thresholds[name]))
        assert 0 < above < len(scores) and thresholds[name] not in scores, name
        assert thresholds[name] == pytest.approx((scores[above - 1] + scores[above]) / 2, abs=1e-15)

def test_trainer_compute_metrics_applies_sigmoid_to_half_precision_logits(arrays):
    probs, labels = arrays
    logits = np.log(np.clip(probs, 1e-3, 1 - 1e-3) / (1 - np.clip(probs, 1e-3, 1 - 1e-3))).astype(np.float16)
    metric_fn = make_compute_metrics(NAMES, thresholds=dict.fromkeys(NAMES, 0.3))
    from_tuple = metric_fn(EvalPrediction(predictions=(logits, np.zeros(3)), label_ids=labels))
    expected = compute_metrics(sigmoid(logits), labels, NAMES, dict.fromkeys(NAMES, 0.3))
    assert from_tuple == expected
    assert metric_fn(EvalPrediction(predictions=logits, label_ids=labels)) == expected
    assert expected["auroc_mean"] == pytest.approx(compute_metrics(probs, labels, NAMES)["auroc_mean"], abs=0.01)


def test_evaluate_module_loads_offline_and_agrees(arrays, monkeypatch, tmp_path):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    probs, labels = arrays
    metric = evaluate.load(str(EVALUATE_METRIC_DIR), cache_dir=str(tmp_path))
    metric.add_batch(predictions=probs[:120], references=labels[:120])
    metric.add_batch(predictions=probs[120:], references=labels[120:])
    thresholds = dict.fromkeys(NAMES, 0.4)
    assert metric.compute(thresholds=thresholds) == pytest.approx(compute_metrics(probs, labels, NAMES, thresholds))


def test_metric_default_names_are_the_project_findings():
    assert CHESTXRAY14_FINDINGS == FINDINGS


# Run in a fresh interpreter where any import of `pipeline` fails, as for someone who copied only the folder.
_LOAD_WITHOUT_PIPELINE = """
import json

import evaluate
import numpy as np

arrays_path, metric_dir, cache_dir, thresholds = sys.argv[1:]
arrays = np.load(arrays_path)
metric = evaluate.load(metric_dir, cache_dir=cache_dir)
results = metric.compute(predictions=arrays["probs"], references=arrays["labels"], thresholds=json.loads(thresholds))
print(json.dumps(results))
"""


def test_evaluate_module_folder_works_without_the_project(arrays, tmp_path):
    probs, labels = arrays
    metric_dir = shutil.copytree(EVALUATE_METRIC_DIR, tmp_path / "chestxray14")
    np.savez(tmp_path / "arrays.npz", probs=probs, labels=labels)
    thresholds = dict.fromkeys(NAMES, 0.4)
    env = {"HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    args = [str(tmp_path / "arrays.npz"), str(metric_dir), str(tmp_path / "cache"), json.dumps(thresholds)]
    completed = run_without_project(_LOAD_WITHOUT_PIPELINE, *args, cwd=tmp_path, env=env, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results == pytest.approx(compute_metrics(probs, labels, NAMES, thresholds))


def test_one_class_findings_are_one_log_line_per_split_not_a_warning_per_evaluation(arrays, caplog, monkeypatch):
    monkeypatch.setattr(metrics, "_logged", set())
    probs, labels = arrays
    labels[:, 7] = 0  # Hernia: no positives
    logits = np.log(probs.clip(1e-6, 1 - 1e-6) / (1 - probs.clip(1e-6, 1 - 1e-6)))
    compute = make_compute_metrics(NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a UserWarning escaping would fail here
        for _ in range(3):  # three epochs' evaluations of the same split
            compute(EvalPrediction(predictions=logits, label_ids=labels))
        compute(EvalPrediction(predictions=logits[:100], label_ids=labels[:100]))  # another split
    lines = [record.getMessage() for record in caplog.records if record.name == "pipeline.metrics"]
    assert len(lines) == 2 and all("Hernia" in line for line in lines)
    assert "in 200 samples" in lines[0] and "in 100 samples" in lines[1]
