"""Every number of the report: point estimates from `pipeline.metrics`, intervals from a bootstrap over patients."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from pipeline import stats
from pipeline.metrics import compute_metrics
from pipeline.report import ReportError
from pipeline.report.reading import Run, TestSplit

CALIBRATION_BINS = 10
# Above this ECE the probabilities are off by more than 10 points on average: worth a line in the text.
ECE_WARNING = 0.10
AGE_BANDS = (("under 40", 0, 39), ("40 to 60", 40, 60), ("over 60", 61, 10_000))
# A subgroup of fewer patients gets no interval and is never compared: its bootstrap resamples a handful of
# patients, whose interval can be spuriously narrow (zero-width for one patient).
MIN_SUBGROUP_PATIENTS = 20


@dataclass
class Subgroups:
    """Subgroup results. `sizes`: (images, patients) of every group; `intervals`: each model's mean AUROC for the
    groups with at least MIN_SUBGROUP_PATIENTS patients; `findings`: per attribute, the findings those means are
    over (both classes present in every such group of the attribute, so the groups' means are comparable)."""

    sizes: dict[tuple[str, str], tuple[int, int]]
    intervals: dict[tuple[str, str], dict[str, stats.Interval]]
    findings: dict[str, list[str]]


@dataclass
class Evaluation:
    """Every number of the report for a set of runs on one test split."""

    metrics: dict[str, dict[str, float]]
    intervals: dict[str, stats.Interval]
    comparisons: dict[tuple[str, str], stats.PairedDifference]
    subgroups: Subgroups
    ece: dict[str, dict[str, float]]
    calibration: dict[str, stats.CalibrationBins]


def mean_auroc_intervals(
    probs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    patient_ids: np.ndarray,
    n_boot: int,
    seed: int,
    progress: tqdm | None = None,
) -> tuple[dict[str, stats.Interval], dict[str, np.ndarray]]:
    """Each model's mean AUROC with its 95% interval, and the bootstrap samples behind it. All models see the
    same patient resamples, so their differences are paired."""
    scores = {model: stats.PatientAUROCs(p, labels, patient_ids) for model, p in probs.items()}
    samples = stats.bootstrap_mean_aurocs(list(scores.values()), n_boot, seed, progress)
    intervals = {
        model: stats.percentile_interval(ranked.mean(), samples[:, k])
        for k, (model, ranked) in enumerate(scores.items())
    }
    return intervals, {model: samples[:, k] for k, model in enumerate(scores)}


def comparison_pairs(
    names: Sequence[str], reference: str | None = None, explicit: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(A, B) pairs to compare as A − B: every run against the reference (default: the first), then `A:B` pairs."""
    reference = reference or names[0]
    if reference not in names:
        raise ReportError(f"--reference {reference!r} is not one of the runs: {', '.join(names)}")
    pairs = [(name, reference) for name in names if name != reference]
    for text in explicit:
        a, sep, b = text.partition(":")
        if not sep or a not in names or b not in names or a == b:
            raise ReportError(f"--pair {text!r}: expected A:B with two different runs among {', '.join(names)}")
        pairs.append((a, b))
    return list(dict.fromkeys(pairs))


def subgroup_masks(test: TestSplit) -> dict[tuple[str, str], np.ndarray]:
    """(attribute, group) → mask over the test images: sex, age band, view position."""
    masks = {("Sex", str(value)): test.sex == value for value in sorted({s for s in test.sex if s})}
    for band, low, high in AGE_BANDS:
        masks["Age", band] = (test.age >= low) & (test.age <= high)
    masks.update({("View", str(value)): test.view == value for value in sorted({v for v in test.view if v})})
    return {key: mask for key, mask in masks.items() if mask.any()}


def shared_findings(labels: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Indices of the findings with both classes in every masked group: the findings group means can share."""
    defined = [(labels[mask].min(axis=0) < labels[mask].max(axis=0)) for mask in masks]
    return np.flatnonzero(np.logical_and.reduce(defined)) if defined else np.array([], dtype=int)


def subgroup_intervals(probs: Mapping[str, np.ndarray], test: TestSplit, n_boot: int, seed: int) -> Subgroups:
    """Per subgroup with enough patients: each model's mean AUROC with its interval (patients resampled within
    the group), over the findings defined in every such group of the same attribute."""
    masks = subgroup_masks(test)
    sizes = {key: (int(mask.sum()), len(np.unique(test.patient_ids[mask]))) for key, mask in masks.items()}
    kept = [key for key in masks if sizes[key][1] >= MIN_SUBGROUP_PATIENTS]
    intervals, findings = {}, {}
    with progress_bar(n_boot * len(kept), "bootstrap: subgroups") as progress:
        for attribute in dict.fromkeys(attribute for attribute, _ in kept):
            groups = [key for key in kept if key[0] == attribute]
            columns = shared_findings(test.labels, [masks[key] for key in groups])
            findings[attribute] = [test.names[j] for j in columns]
            for key in groups:
                mask = masks[key]
                group = {model: p[mask][:, columns] for model, p in probs.items()}
                labels = test.labels[mask][:, columns]
                patients = test.patient_ids[mask]
                intervals[key], _ = mean_auroc_intervals(group, labels, patients, n_boot, seed, progress)
    return Subgroups(sizes, intervals, findings)


def progress_bar(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="resample", file=sys.stderr, leave=False, mininterval=1.0)


def calibration_errors(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """ECE per finding and pooled over all findings ("all")."""
    errors = {
        name: stats.expected_calibration_error(probs[:, j], labels[:, j], CALIBRATION_BINS)
        for j, name in enumerate(names)
    }
    errors["all"] = stats.expected_calibration_error(probs, labels, CALIBRATION_BINS)
    return errors


def evaluate_runs(
    runs: Sequence[Run], test: TestSplit, pairs: Sequence[tuple[str, str]], n_boot: int, seed: int
) -> Evaluation:
    """All numbers of the report: metrics, intervals, paired differences, subgroups, calibration."""
    probs = {run.name: run.probs for run in runs}
    metrics = {name: compute_metrics(p, test.labels, test.names) for name, p in probs.items()}
    with progress_bar(n_boot, "bootstrap: test split") as progress:
        intervals, samples = mean_auroc_intervals(probs, test.labels, test.patient_ids, n_boot, seed, progress)
    comparisons = {
        (a, b): stats.paired_difference(intervals[a].estimate, intervals[b].estimate, samples[a], samples[b])
        for a, b in pairs
    }
    return Evaluation(
        metrics=metrics,
        intervals=intervals,
        comparisons=comparisons,
        subgroups=subgroup_intervals(probs, test, n_boot, seed),
        ece={name: calibration_errors(p, test.labels, test.names) for name, p in probs.items()},
        calibration={name: stats.calibration_bins(p, test.labels, CALIBRATION_BINS) for name, p in probs.items()},
    )
