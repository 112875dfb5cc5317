"""The report's statistics wired right, read from `report.md` as a user reads it.

Paired resamples (identical runs differ by exactly zero), patients as the resampling unit (checked against a
patient-cluster bootstrap written here, drawing in the documented order), and predictions matched to the test
split by image id, whatever the CSV's row order.
"""

from __future__ import annotations

import numpy as np
import pytest
from report_data import make_cohort, save_dataset, write_run
from sklearn.metrics import roc_auc_score

from pipeline.cli import main
from pipeline.labels import FINDINGS

N_BOOT, SEED = 100, 3


def compare(output, *runs, bootstrap: int = N_BOOT) -> str:
    argv = ["compare", *map(str, runs), "--output", str(output), "--bootstrap", str(bootstrap)]
    assert main([*argv, "--seed", str(SEED), "--explain-images", "0"]) == 0
    return (output / "report.md").read_text()


def row(text: str, heading: str, first_cell: str) -> list[str]:
    section = text.split(f"## {heading}\n\n", 1)[1].split("\n\n", 1)[0]
    for line in section.splitlines():
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} under {heading!r}")


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """40 patients with 5 images each that are copies of one another (labels and scores): the extreme of images
    correlated within a patient, where only a patient bootstrap gives honest intervals."""
    root = tmp_path_factory.mktemp("clustered")
    cohort = make_cohort(n_patients=40, images_per_patient=5, seed=4)
    first = np.arange(0, len(cohort.image_ids), 5)
    cohort.labels = np.repeat(cohort.labels[first], 5, axis=0)
    rng = np.random.default_rng(5)
    probs = np.repeat(np.clip(cohort.labels[first] * 0.3 + rng.random((40, len(FINDINGS))) * 0.7, 0, 1), 5, axis=0)
    dataset = save_dataset(root / "dataset", cohort)
    return cohort, probs, dataset


def cluster_bootstrap(probs, labels, patient_ids, n_boot, seed, by_image=False):
    """Mean AUROC per resample: draw len(units) units with replacement, `rng.integers(0, len(units), len(units))`
    once per resample from `np.random.default_rng(seed)`, units being the sorted unique patients (or images)."""
    units, inverse = np.unique(np.arange(len(labels)) if by_image else patient_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, len(units), len(units)), minlength=len(units))[inverse]
        aurocs = [
            roc_auc_score(labels[:, j], probs[:, j], sample_weight=weights)
            for j in range(labels.shape[1])
            if 0 < (weights * labels[:, j]).sum() < weights.sum()
        ]
        means.append(np.mean(aurocs))
    return np.percentile(means, [2.5, 97.5])


def test_identical_runs_differ_by_exactly_zero(clustered, tmp_path):
    cohort, probs, dataset = clustered
    a = write_run(tmp_path / "a", cohort.image_ids, probs, dataset)
    b = write_run(tmp_path / "b", cohort.image_ids, probs, dataset)
    text = compare(tmp_path / "report", a, b)
    assert row(text, "Paired comparisons", "b − a")[1:3] == ["0.000 [0.000, 0.000]", "1"]


def test_intervals_resample_patients_not_images(clustered, tmp_path):
    cohort, probs, dataset = clustered
    run = write_run(tmp_path / "model", cohort.image_ids, probs, dataset)
    cells = row(compare(tmp_path / "report", run), "Models on the test split", "model")
    low, high = (float(x) for x in cells[1].split("[")[1].rstrip("]").split(","))
    patients = cluster_bootstrap(probs, cohort.labels, cohort.patient_ids, N_BOOT, SEED)
    images = cluster_bootstrap(probs, cohort.labels, cohort.patient_ids, N_BOOT, SEED, by_image=True)
    assert (low, high) == pytest.approx(tuple(patients), abs=5e-4)  # the report rounds to 3 digits
    assert high - low > 1.5 * (images[1] - images[0])  # copies inflate an image bootstrap's confidence


def test_row_order_of_the_predictions_does_not_matter(clustered, tmp_path):
    cohort, probs, dataset = clustered
    ordered = write_run(tmp_path / "ordered" / "model", cohort.image_ids, probs, dataset)
    shuffle = np.random.default_rng(6).permutation(len(probs))
    shuffled_ids = [cohort.image_ids[i] for i in shuffle]
    shuffled = write_run(tmp_path / "shuffled" / "model", shuffled_ids, probs[shuffle], dataset)
    expected = compare(tmp_path / "report_ordered", ordered).split("## Models on the test split", 1)[1]
    assert compare(tmp_path / "report_shuffled", shuffled).split("## Models on the test split", 1)[1] == expected
