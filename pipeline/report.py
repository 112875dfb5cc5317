"""`chestxray compare`: training runs → report.md with tables, confidence intervals and figures.

The flow is data → numbers → markdown: `read_run` and `load_test_split` read the files, `evaluate_runs` does the
statistics (point estimates from `pipeline.metrics`, intervals from a bootstrap over patients), the `*_section`
functions turn numbers into markdown, and `write_report` puts it together with the figures.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm

from pipeline import explain, figures, run_folder, stats
from pipeline.cards import RunFolderError, load_run_config, read_json
from pipeline.dataset import finding_names, load_dataset_dict
from pipeline.errors import UserError
from pipeline.metrics import compute_metrics
from pipeline.published import OFFICIAL_TEST_IMAGES, PAPER, PAPER_RESULTS, REFERENCE_RESULTS

REPORT_NAME = "report.md"
DEFAULT_BOOTSTRAP = 1000
DEFAULT_EXPLAIN_IMAGES = 4
CALIBRATION_BINS = 10
# Above this ECE the probabilities are off by more than 10 points on average: worth a line in the text.
ECE_WARNING = 0.10
AGE_BANDS = (("under 40", 0, 39), ("40 to 60", 40, 60), ("over 60", 61, 10_000))
# A subgroup of fewer patients gets no interval and is never compared: its bootstrap resamples a handful of
# patients, whose interval can be spuriously narrow (zero-width for one patient).
MIN_SUBGROUP_PATIENTS = 20
NIH_ALL_NEGATIVE_ACCURACY = 0.916

SUMMARY_NOTE = (
    "\n\nMean AUROC: mean over findings with both classes in the test split, with a 95% interval from a bootstrap "
    "over patients. Accuracy and macro F1 at threshold 0.5; accuracy is element-wise (the paper's), beside the "
    "accuracy of predicting no finding at all. Best value per column in bold (for parameters and training time: the "
    "smallest). Per-finding columns: AUROC; n/a where the test split has one class only."
)
PAIRED_NOTE = (
    "\n\nPaired bootstrap over patients: each resample draws patients with replacement and evaluates both models on "
    "the same images; the p-value is two-sided (twice the share of resamples on the far side of zero). With B "
    "resamples no p-value below 2/(B + 1) can be shown: \"< 0.002\" (for 1,000) means that bound was reached; "
    "raise `--bootstrap` to tighten it."
)


class ReportError(UserError, ValueError):
    """Run folders, a dataset or options that cannot make a report."""


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


# ---------------------------------------------------------------- reading


def read_predictions(path: Path, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """`test_predictions.csv` → image ids and an (N, F) probability array, checking the header and values."""
    if not path.is_file():
        raise ReportError(f"{path.parent}: missing {path.name}")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    expected = ["image_id", *names]
    if not rows or rows[0] != expected:
        raise ReportError(
            f"{path}: header must be {','.join(expected)}; got {','.join(rows[0]) if rows else 'nothing'}"
        )
    ids, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            probs = [float(value) for value in row[1:]]
        except ValueError as error:
            raise ReportError(f"{path}, line {line}: {error}") from error
        if len(probs) != len(names) or not all(0.0 <= p <= 1.0 for p in probs):
            raise ReportError(f"{path}, line {line}: expected {len(names)} probabilities in [0, 1], got {row[1:]}")
        ids.append(row[0])
        values.append(probs)
    return ids, np.asarray(values, dtype=float).reshape(len(ids), len(names))


def read_run(path: str | Path, names: Sequence[str]) -> Run:
    """Predictions, results, log history and dataset name of one run folder."""
    path = Path(path)
    ids, probs = read_predictions(path / run_folder.TEST_PREDICTIONS, names)
    state_path = path / run_folder.TRAINER_STATE
    history = read_json(state_path).get("log_history", []) if state_path.is_file() else []
    return Run(path.resolve().name, path, ids, probs, read_json(path / run_folder.ALL_RESULTS), history)


def run_dataset(run_dirs: Sequence[str | Path]) -> str:
    """The dataset all runs were trained on, from their run_config.yaml."""
    found = {}
    for run_dir in run_dirs:
        found[str(run_dir)] = load_run_config(Path(run_dir))["data"].get("dataset_name_or_path")
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
    return Run(run.name, run.path, list(test.image_ids), run.probs[order], run.results, run.log_history)


# ---------------------------------------------------------------- numbers


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


# ---------------------------------------------------------------- markdown


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def best_flags(values: Sequence[float | None], higher_is_better: bool | None = True) -> list[bool]:
    """Which entries hold the best value of a column (ties all win; missing and NaN never do; None: no best)."""
    present = [v for v in values if v is not None and not np.isnan(v)]
    if not present or higher_is_better is None:
        return [False] * len(values)
    best = max(present) if higher_is_better else min(present)
    return [v is not None and not np.isnan(v) and v == best for v in values]


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def format_interval(interval: stats.Interval, digits: int = 3) -> str:
    return f"{_number(interval.estimate, digits)} [{_number(interval.low, digits)}, {_number(interval.high, digits)}]"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_count(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:.1f} M" if value >= 1e5 else f"{value:,.0f}"


@dataclass
class TableInput:
    """The model table's inputs: metrics and intervals from `Evaluation`, results from all_results.json."""

    metrics: dict[str, dict[str, float]]
    intervals: dict[str, stats.Interval]
    results: dict[str, dict]


@dataclass(frozen=True)
class Column:
    """One column of the model table: its header, its value, how to show it, which direction is best (None: no
    best), and whether the cell shows the mean AUROC interval instead of the bare value."""

    header: str
    value: Callable[[TableInput, str], float | None]
    show: Callable[[float | None], str] = _number
    higher_is_better: bool | None = True
    interval: bool = False

    def cell(self, table: TableInput, model: str, value: float | None) -> str:
        return format_interval(table.intervals[model]) if self.interval else self.show(value)


def summary_columns(names: Sequence[str]) -> list[Column]:
    """The model table's columns. Fewer parameters and less training time count as better."""

    def metric(key: str):
        return lambda e, m: e.metrics[m].get(key)

    def result(key: str):
        return lambda e, m: e.results[m].get(key)

    return [
        Column("Mean AUROC [95% CI]", lambda e, m: e.intervals[m].estimate, interval=True),
        Column("Micro AUROC", metric("auroc_micro")),
        Column("Accuracy", metric("accuracy")),
        Column("All-negative accuracy", metric("accuracy_all_negative"), higher_is_better=None),
        Column("Macro F1", metric("f1_macro")),
        Column("Parameters", result("num_parameters"), format_count, higher_is_better=False),
        Column("Training time", result("train_runtime"), format_duration, higher_is_better=False),
        Column("Samples/s", result("train_samples_per_second"), lambda v: _number(v, 1)),
        *[Column(name, metric(f"auroc_{name}")) for name in names],
    ]


def summary_section(table: TableInput, names: Sequence[str]) -> str:
    """One row per model; the best value of each column in bold."""
    models = list(table.metrics)
    columns = summary_columns(names)
    cells = [[] for _ in models]
    for column in columns:
        values = [column.value(table, model) for model in models]
        flags = best_flags(values, column.higher_is_better)
        for row, model, value, best in zip(cells, models, values, flags, strict=True):
            text = column.cell(table, model, value)
            row.append(f"**{text}**" if best else text)
    header = ["Model", *(column.header for column in columns)]
    return (
        "## Models on the test split\n\n"
        + markdown_table(header, [[m, *c] for m, c in zip(models, cells, strict=True)])
        + SUMMARY_NOTE
    )


def format_p_value(result: stats.PairedDifference) -> str:
    """The p-value, or "< floor" where no resample fell on the far side of zero (the bootstrap's resolution)."""
    return f"< {result.p_floor:.2g}" if result.p_value <= result.p_floor else f"{result.p_value:.3g}"


def comparison_section(comparisons: Mapping[tuple[str, str], stats.PairedDifference]) -> str:
    """Paired differences in mean AUROC, each with its interval, p-value and a verdict."""
    if not comparisons:
        return "## Paired comparisons\n\nOnly one run: nothing to compare."
    rows = []
    for (a, b), result in comparisons.items():
        diff = result.difference
        if diff.low > 0 or diff.high < 0:
            verdict = f"{a if diff.estimate > 0 else b} is better"
        else:
            verdict = "no significant difference"
        rows.append([f"{a} − {b}", format_interval(diff), format_p_value(result), verdict])
    return (
        "## Paired comparisons\n\n"
        + markdown_table(["Comparison", "Δ mean AUROC [95% CI]", "p-value", "At the 5% level"], rows)
        + PAIRED_NOTE
    )


def subgroup_gaps(subgroups: Mapping[tuple[str, str], Mapping[str, stats.Interval]]) -> list[str]:
    """Sentences for every model and pair of groups of one attribute whose intervals do not overlap."""
    sentences = []
    models = list(next(iter(subgroups.values()), {}))
    attributes = dict.fromkeys(attribute for attribute, _ in subgroups)
    for model, attribute in itertools.product(models, attributes):
        groups = [(g, subgroups[a, g][model]) for a, g in subgroups if a == attribute]
        for (g1, i1), (g2, i2) in itertools.combinations(groups, 2):
            if np.isnan([i1.low, i2.low]).any() or i1.overlaps(i2):
                continue
            (hi_g, hi), (lo_g, lo) = sorted([(g1, i1), (g2, i2)], key=lambda x: -x[1].estimate)
            sentences.append(
                f"**{model}** works better for {attribute.lower()} {hi_g} ({format_interval(hi)}) than for "
                f"{lo_g} ({format_interval(lo)}): the intervals do not overlap."
            )
    return sentences


def _findings_note(names: Sequence[str], all_names: Sequence[str]) -> str:
    left_out = [name for name in all_names if name not in names]
    return f"all {len(names)}" if not left_out else f"{len(names)} (without {', '.join(left_out)})"


def subgroup_section(subgroups: Subgroups, models: Sequence[str], all_names: Sequence[str]) -> str:
    """Mean AUROC per subgroup and model, and the gaps larger than the intervals."""
    too_few = f"too few patients (< {MIN_SUBGROUP_PATIENTS})"
    rows = [
        [
            attribute,
            group,
            f"{images} / {patients}",
            *(
                format_interval(subgroups.intervals[attribute, group][m])
                if (attribute, group) in subgroups.intervals
                else too_few
                for m in models
            ),
        ]
        for (attribute, group), (images, patients) in subgroups.sizes.items()
    ]
    averaged = "; ".join(
        f"{attribute}: {_findings_note(names, all_names)}" for attribute, names in subgroups.findings.items()
    )
    gaps = subgroup_gaps(subgroups.intervals)
    text = "\n".join(f"- {s}" for s in gaps) if gaps else "No gap between subgroups exceeds the intervals."
    return (
        "## Who the models work for\n\n"
        + markdown_table(["Attribute", "Group", "Images / patients", *models], rows)
        + "\n\nMean AUROC [95% CI] per subgroup of the test split (bootstrap over the group's patients). "
        f"Groups with fewer than {MIN_SUBGROUP_PATIENTS} patients get no interval and are never compared. "
        "Within an attribute, every group's mean is over the same findings: those with both classes in each of "
        f"its compared groups. Findings averaged per attribute: {averaged or 'none'}.\n\n" + text
    )


def calibration_section(ece: Mapping[str, Mapping[str, float]], names: Sequence[str]) -> str:
    """ECE per model and finding, and the (model, finding) pairs above `ECE_WARNING`."""
    columns = ["all", *names]
    rows = [[model, *(_number(errors[c]) for c in columns)] for model, errors in ece.items()]
    flagged = [
        f"{model} / {name} ({errors[name]:.3f})"
        for model, errors in ece.items()
        for name in names
        if errors[name] > ECE_WARNING
    ]
    note = (
        f"Poorly calibrated (ECE > {ECE_WARNING:.2f}): "
        + ", ".join(flagged)
        + ". Do not read these probabilities as risks."
        if flagged
        else f"No model has a finding with ECE above {ECE_WARNING:.2f}."
    )
    return (
        "## Can the probabilities be trusted?\n\n"
        + markdown_table(["Model", "All (pooled)", *names], rows)
        + (
            f"\n\nExpected calibration error ({CALIBRATION_BINS} equal-width bins): the mean gap between predicted "
            f"probability and observed rate, weighted by bin size. Lower is better.\n\n{note}"
        )
    )


def test_split_label(n_images: int) -> str:
    """What this report's test split is, said plainly where it is not NIH's whole official list."""
    if n_images == OFFICIAL_TEST_IMAGES:
        return "this dataset's test split (the official list's size)"
    return f"this dataset's test split: **partial**, {n_images:,} of the {OFFICIAL_TEST_IMAGES:,} official images"


def paper_rows(evaluation: Evaluation) -> list[list[str]]:
    """Each model of the reproduced paper beside the run of its recipe, in the paper's metrics and the field's."""
    rows = []
    for paper in PAPER_RESULTS:
        ours = evaluation.metrics.get(paper.recipe)
        measured = ["not in this report"] * 3
        if ours is not None:
            interval = format_interval(evaluation.intervals[paper.recipe])
            measured = [f"{ours['accuracy']:.1%}", _number(ours["auroc_micro"]), interval]
        rows.append(
            [
                f"{paper.model}: {paper.description}, {paper.init} init",
                f"{paper.accuracy * 100:.4g}%",
                f"{paper.pooled_auc:.2f}",
                f"`{paper.recipe}`",
                *measured,
            ]
        )
    return rows


def references_section(evaluation: Evaluation, all_negative_accuracy: float, n_test_images: int) -> str:
    """Published numbers beside ours, in separate columns, and why the paper's metrics are not the field's."""
    split = test_split_label(n_test_images)
    published = [
        [reference.model, reference.test_split, f"{reference.mean_auroc:.3f}", reference.source]
        for reference in REFERENCE_RESULTS
    ]
    ours = [
        [f"**{name}** (this report)", split, format_interval(i), "this report"]
        for name, i in evaluation.intervals.items()
    ]
    if n_test_images != OFFICIAL_TEST_IMAGES:  # never a partial split's number beside published ones as if comparable
        published_table = markdown_table(["Model", "Test split", "Mean AUROC", "Source"], published)
        ours_table = markdown_table(["Model", "Test split", "Mean AUROC [95% CI]", "Source"], ours)
        field = published_table + "\n\nThis report's runs, on a test split not comparable with those:\n\n" + ours_table
    else:
        field = markdown_table(["Model", "Test split", "Mean AUROC", "Source"], published + ours)
    paper_header = [
        "Paper's model",
        "Paper: accuracy",
        "Paper: pooled AUC",
        "Recipe here",
        "Here: accuracy",
        "Here: micro AUROC",
        "Here: mean AUROC [95% CI]",
    ]
    return (
        "## Published reference values\n\n"
        + field
        + f"\n\n### The reproduced paper\n\n{PAPER}, results table, beside the run of each model's recipe here "
        + f"({split}; the paper's numbers are on its own split, below):\n\n"
        + markdown_table(paper_header, paper_rows(evaluation))
        + (
            "\n\nThe paper's two metrics are not the field's, and its numbers cannot be set against the mean "
            "per-finding AUROC above. Element-wise accuracy is dominated by negatives: "
            f"predicting no finding at all scores about {NIH_ALL_NEGATIVE_ACCURACY:.1%} on ChestX-ray14 "
            f"({all_negative_accuracy:.1%} on this test split), so a useless model looks good. Keras' AUC pools every "
            "(image, finding) pair into one ROC curve (our *micro AUROC*), which rewards ranking common findings above "
            "rare ones rather than detecting each finding. And its split is by image, not by patient, so follow-up "
            "images of the same patient sit on both sides of it: that leakage inflates every number it reports."
        )
    )


def figures_section(paths: Mapping[str, Path], output: Path) -> str:
    """Markdown image links, relative to the report."""
    return "## Figures\n\n" + "\n\n".join(
        f"### {title}\n\n![{title}]({path.relative_to(output).as_posix()})" for title, path in paths.items()
    )


def header_section(runs: Sequence[Run], dataset: str, test: TestSplit, n_boot: int, seed: int) -> str:
    listing = "\n".join(f"- **{run.name}**: `{run.path}`" for run in runs)
    return (
        f"# Model comparison\n\nDataset `{dataset}`, test split: {len(test.image_ids)} images of "
        f"{len(np.unique(test.patient_ids))} patients. Bootstrap: {n_boot} resamples of patients, seed {seed}.\n\n"
        f"Runs:\n{listing}"
    )


def render_report(
    evaluation: Evaluation,
    runs: Sequence[Run],
    test: TestSplit,
    head: str,
    figure_paths: Mapping[str, Path],
    output: Path,
) -> str:
    """The whole report.md text."""
    table = TableInput(evaluation.metrics, evaluation.intervals, {run.name: run.results for run in runs})
    all_negative = next(iter(evaluation.metrics.values()))["accuracy_all_negative"]
    sections = [
        head,
        summary_section(table, test.names),
        comparison_section(evaluation.comparisons),
        subgroup_section(evaluation.subgroups, [run.name for run in runs], test.names),
        calibration_section(evaluation.ece, test.names),
        references_section(evaluation, all_negative, len(test.image_ids)),
        figures_section(figure_paths, output),
    ]
    return "\n\n".join(sections) + "\n"


# ---------------------------------------------------------------- figures


def explain_targets(
    test: TestSplit, boxes: Mapping[str, Sequence[explain.Box]], count: int
) -> list[tuple[int, str | None]]:
    """(test index, finding) of the images to explain: boxed images first, then positives, then the rest.

    The finding is the first boxed one, else the first true one, else None (the model's most probable).
    """

    def target(i: int) -> str | None:
        image_id = test.image_ids[i]
        if boxes.get(image_id):
            return boxes[image_id][0].finding
        positives = np.flatnonzero(test.labels[i])
        return test.names[positives[0]] if positives.size else None

    order = sorted(
        range(len(test.image_ids)), key=lambda i: (not boxes.get(test.image_ids[i]), not test.labels[i].any(), i)
    )
    return [(i, target(i)) for i in order[:count]]


def explanation_figure(
    run: Run,
    test: TestSplit,
    targets: Sequence[tuple[int, str | None]],
    boxes: Mapping[str, Sequence[explain.Box]],
    path: Path,
    trust_remote_code: bool = False,
) -> Path:
    """Maps of one run's model on the chosen test images, as one PNG."""
    model, processor = explain.load_model(run.path, trust_remote_code)
    images = test.dataset.select([i for i, _ in targets])["image"]
    ids = [test.image_ids[i] for i, _ in targets]
    results = [
        explain.explain_image(model, processor, image, finding, boxes.get(image_id, ()))
        for (_, finding), image, image_id in zip(targets, images, ids, strict=True)
    ]
    panels = [
        figures.ExplanationPanel(r.image, r.heatmap, f"{image_id}\n{r.finding} p={r.probability:.2f}", r.boxes)
        for r, image_id in zip(results, ids, strict=True)
    ]
    return figures.plot_explanations(panels, path, f"{run.name}: {results[0].method}")


def write_figures(
    runs: Sequence[Run],
    test: TestSplit,
    evaluation: Evaluation,
    output: Path,
    explain_images: int,
    bbox_csv: Path | None,
    trust_remote_code: bool = False,
) -> dict[str, Path]:
    """Every figure of the report, title → PNG path."""
    probs = {run.name: run.probs for run in runs}
    paths = {
        "ROC curves per finding": figures.plot_roc_curves(probs, test.labels, test.names, output / "roc_curves.png"),
        "Reliability": figures.plot_reliability(evaluation.calibration, output / "reliability.png"),
    }
    histories = {run.name: run.log_history for run in runs if run.log_history}
    if histories:
        paths["Training curves"] = figures.plot_training_curves(histories, output / "training_curves.png")
    if explain_images > 0:
        boxes = explain.read_bbox_csv(bbox_csv, test.names) if bbox_csv else {}
        targets = explain_targets(test, boxes, explain_images)
        for run in runs:
            paths[f"Where {run.name} looks"] = explanation_figure(
                run, test, targets, boxes, output / f"explain_{run.name}.png", trust_remote_code
            )
    return paths


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="training run folders to compare")
    parser.add_argument("--output", type=Path, required=True, help="folder for report.md and the figures")
    parser.add_argument("--dataset", help="dataset folder or Hub id (default: data.dataset_name_or_path of the runs)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples of patients")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--reference", help="run (folder name) the others are compared with (default: the first)")
    parser.add_argument("--pair", action="append", default=[], metavar="A:B", help="also compare run A with run B")
    parser.add_argument(
        "--explain-images", type=int, default=DEFAULT_EXPLAIN_IMAGES, help="test images to explain (0: none)"
    )
    parser.add_argument("--bbox-csv", type=Path, help="NIH BBox_List_2017.csv, to draw the boxes on explained images")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --output")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the custom model code in run folders to explain them (read it first; the paper's CNN needs none)",
    )


def prepare_output(output: Path, overwrite: bool) -> None:
    if (output / REPORT_NAME).exists() and not overwrite:
        raise ReportError(f"{output / REPORT_NAME} exists; pass --overwrite to replace it")
    output.mkdir(parents=True, exist_ok=True)


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Fail fast, before any computation, on options that cannot work; return the run names."""
    missing = [str(run) for run in args.runs if not Path(run).is_dir()]
    if missing:
        raise ReportError(f"not a run folder: {', '.join(missing)}")
    names = [Path(run).resolve().name for run in args.runs]
    if len(set(names)) != len(names):
        raise ReportError(f"run folders must have distinct names (they label the report): {', '.join(names)}")
    if args.bootstrap < 1:
        raise ReportError(f"--bootstrap must be at least 1, got {args.bootstrap}")
    if args.bbox_csv and args.explain_images > 0 and not Path(args.bbox_csv).is_file():
        raise ReportError(f"--bbox-csv {args.bbox_csv}: no such file")
    return names


def write_report(args: argparse.Namespace) -> Path:
    """The whole `compare` command; returns the path of report.md."""
    names = check_arguments(args)
    pairs = comparison_pairs(names, args.reference, args.pair)
    prepare_output(args.output, args.overwrite)
    try:
        dataset = args.dataset or run_dataset(args.runs)
        test = load_test_split(dataset)
        runs = [align_predictions(read_run(path, test.names), test) for path in args.runs]
    except RunFolderError as error:
        raise ReportError(str(error)) from error
    evaluation = evaluate_runs(runs, test, pairs, args.bootstrap, args.seed)
    figure_paths = write_figures(
        runs, test, evaluation, args.output, args.explain_images, args.bbox_csv, args.trust_remote_code
    )
    head = header_section(runs, dataset, test, args.bootstrap, args.seed)
    report = args.output / REPORT_NAME
    report.write_text(render_report(evaluation, runs, test, head, figure_paths, args.output), encoding="utf-8")
    return report


def run_cli(args: argparse.Namespace) -> int:
    try:
        report = write_report(args)
    except (ReportError, explain.ExplainError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0
