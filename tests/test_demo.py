"""The README's main command: convert the shipped NIH sample, train the demo model, evaluate it; twice."""

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from training import read_predictions

from pipeline.labels import FINDINGS
from pipeline.metrics import compute_metrics

REPO = Path(__file__).parents[1]
SAMPLE_TEST_LIST = REPO / "pipeline" / "assets" / "nih_sample" / "test_list.txt"


def run_demo(demo_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHESTXRAY_DEMO_DIR": str(demo_dir)}
    return subprocess.run(
        ["bash", str(REPO / "recipes" / "demo.sh"), "--use_cpu", "true", "--disable_tqdm", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_end_to_end_and_idempotent(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    dataset = load_from_disk(str(tmp_path / "dataset"))
    assert sorted(dataset["test"]["image_id"]) == sorted(SAMPLE_TEST_LIST.read_text().split())
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "test_results.json").read_text())
    image_ids, probs, _ = read_predictions(run_dir / "test_predictions.csv")
    assert image_ids == dataset["test"]["image_id"]
    labels = np.asarray(dataset["test"]["labels"])
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # findings with one class among the sample's test images
        recomputed = compute_metrics(probs, labels, FINDINGS, thresholds)
    assert results["test_accuracy_all_negative"] == pytest.approx(float(np.mean(labels == 0)), abs=1e-12)
    for key, value in recomputed.items():
        assert results[f"test_{key}"] == pytest.approx(value, abs=1e-6, nan_ok=True), key

    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Reusing the converted sample" in second.stdout and "is complete" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
