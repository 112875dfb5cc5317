"""`chestxray compare RUN_DIR... --output DIR`: a thin command over `write_report(ReportOptions)`.

Only the standard library at the top: `--help` and argument errors must not wait for torch, datasets or
matplotlib, which `write_report` imports when it runs.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from pipeline.report import ReportError

REPORT_NAME = "report.md"
DEFAULT_BOOTSTRAP = 1000
DEFAULT_EXPLAIN_IMAGES = 4


@dataclass
class ReportOptions:
    """Everything a report is made from; the fields are `chestxray compare`'s options."""

    runs: list[Path]
    output: Path
    dataset: str | None = None
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    reference: str | None = None
    pair: list[str] = field(default_factory=list)
    explain_images: int = DEFAULT_EXPLAIN_IMAGES
    bbox_csv: Path | None = None
    overwrite: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self.runs = [Path(run) for run in self.runs]
        self.output = Path(self.output)
        self.bbox_csv = Path(self.bbox_csv) if self.bbox_csv else None
        self.pair = [self.pair] if isinstance(self.pair, str) else list(self.pair)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> ReportOptions:
        return cls(**{option.name: getattr(args, option.name) for option in fields(cls)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="training run folders to compare")
    parser.add_argument("--output", type=Path, required=True, help="folder for report.md and the figures")
    parser.add_argument("--dataset", help="dataset folder or Hub id (default: data.dataset_name_or_path of the runs)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        help="bootstrap resamples of patients (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: %(default)s)")
    parser.add_argument("--reference", help="run (folder name) the others are compared with (default: the first)")
    parser.add_argument("--pair", action="append", default=[], metavar="A:B", help="also compare run A with run B")
    parser.add_argument(
        "--explain-images",
        type=int,
        default=DEFAULT_EXPLAIN_IMAGES,
        help="test images to explain, 0 for none (default: %(default)s)",
    )
    parser.add_argument("--bbox-csv", type=Path, help="NIH BBox_List_2017.csv, to draw the boxes on explained images")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report in --output")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the custom model code in run folders to explain them (read it first; the paper's CNN needs none)",
    )


def check_options(options: ReportOptions) -> list[str]:
    """Fail fast, before any computation, on options that cannot work; return the run names."""
    missing = [str(run) for run in options.runs if not run.is_dir()]
    if missing:
        raise ReportError(f"not a run folder: {', '.join(missing)}")
    names = [run.resolve().name for run in options.runs]
    if len(set(names)) != len(names):
        raise ReportError(f"run folders must have distinct names (they label the report): {', '.join(names)}")
    if options.bootstrap < 1:
        raise ReportError(f"--bootstrap must be at least 1, got {options.bootstrap}")
    if options.bbox_csv and options.explain_images > 0 and not options.bbox_csv.is_file():
        raise ReportError(f"--bbox-csv {options.bbox_csv}: no such file")
    if (options.output / REPORT_NAME).exists() and not options.overwrite:
        raise ReportError(f"{options.output / REPORT_NAME} exists; pass --overwrite to replace it")
    return names


def write_report(options: ReportOptions) -> Path:
    """The whole `compare` command; returns the path of report.md. A failed report leaves no folder it created."""
    from pipeline.report.numbers import comparison_pairs

    names = check_options(options)
    pairs = comparison_pairs(names, options.reference, options.pair)
    # The topmost folder this call creates: removed again if the report fails.
    created = next((path for path in reversed([options.output, *options.output.parents]) if not path.exists()), None)
    options.output.mkdir(parents=True, exist_ok=True)
    try:
        return _write_report(options, names, pairs)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _write_report(options: ReportOptions, names: list[str], pairs: list[tuple[str, str]]) -> Path:
    from pipeline.report.figures import write_figures
    from pipeline.report.markdown import header_section, render_report
    from pipeline.report.numbers import evaluate_runs
    from pipeline.report.reading import align_predictions, load_test_split, read_run, run_dataset

    dataset = options.dataset or run_dataset(options.runs)
    test = load_test_split(dataset)
    runs = [align_predictions(read_run(path, test.names), test) for path in options.runs]
    evaluation = evaluate_runs(runs, test, pairs, options.bootstrap, options.seed)
    figure_paths = write_figures(
        runs, test, evaluation, options.output, options.explain_images, options.bbox_csv, options.trust_remote_code
    )
    head = header_section(runs, dataset, test, options.bootstrap, options.seed)
    report = options.output / REPORT_NAME
    report.write_text(render_report(evaluation, runs, test, head, figure_paths, options.output), encoding="utf-8")
    return report


def run_cli(args: argparse.Namespace) -> int:
    print(f"wrote {write_report(ReportOptions.from_namespace(args))}")
    return 0
