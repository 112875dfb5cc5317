"""The report's text: numbers → markdown sections."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import stats
from pipeline.published import PAPER, PAPER_RESULTS, REFERENCE_RESULTS
from pipeline.report.numbers import CALIBRATION_BINS, ECE_WARNING, MIN_SUBGROUP_PATIENTS, Evaluation, Subgroups
from pipeline.report.reading import Run, TestSplit
from pipeline.run_folder import TestSplitRecord

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
    'resamples no p-value below 2/(B + 1) can be shown: "< 0.002" (for 1,000) means that bound was reached; '
    "raise `--bootstrap` to tighten it."
)


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
    record = TestSplitRecord(n_images)
    if record.complete:
        return "this dataset's test split (the official list's size)"
    return f"this dataset's test split: **partial**, {record.describe()}"


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
    if not TestSplitRecord(
        n_test_images
    ).complete:  # never a partial split's number beside published ones as if comparable
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
    record = TestSplitRecord(len(test.image_ids))
    partial = "" if record.complete else f" (**partial**: {record.describe()}; not comparable with published results)"
    return (
        f"# Model comparison\n\nDataset `{dataset}`, test split: {len(test.image_ids)} images of "
        f"{len(np.unique(test.patient_ids))} patients{partial}. "
        f"Bootstrap: {n_boot} resamples of patients, seed {seed}.\n\n"
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
