"""The comparison study as one command: train every variant on the same data, split and seed, then compare.

    chestxray study --config recipes/study.yaml
    accelerate launch recipes/study.py --config recipes/study.yaml     # every run on several GPUs

A run whose folder already holds test results is skipped; one with checkpoints but no results is resumed.
"""

from __future__ import annotations

import argparse
import gc
import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.arguments import ConfigError, parse_args
from pipeline.errors import UserError
from pipeline.report.command import ReportOptions, write_report


@dataclass
class StudyConfig:
    """What `recipes/study*.yaml` holds."""

    dataset_name_or_path: str
    output_dir: str
    runs: list[str]
    seed: int = 42
    recipes_dir: str = "configs"  # relative to the study YAML's folder
    overrides: dict[str, Any] = field(default_factory=dict)
    run_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    compare: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: Path) -> StudyConfig:
        if not path.is_file():
            raise ConfigError(f"study config {path} does not exist")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"study config {path}: unknown key(s) {', '.join(unknown)}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise ConfigError(f"study config {path}: missing key(s) {', '.join(missing)}")
        config = cls(**values)
        config.recipes_dir = str(path.parent / config.recipes_dir)
        compare_options = {option.name for option in fields(ReportOptions)} - {"runs", "output", "dataset", "overwrite"}
        unknown = sorted(set(config.compare) - compare_options)
        if unknown:
            raise ConfigError(f"study config {path}: unknown compare option(s) {', '.join(unknown)}")
        stray = sorted(set(config.run_overrides) - set(config.runs))
        if stray:
            raise ConfigError(f"study config {path}: run_overrides for runs not in `runs`: {', '.join(stray)}")
        return config

    def recipe(self, name: str) -> Path:
        path = Path(self.recipes_dir) / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"study run {name!r}: no recipe {path} (recipe names are looked up in recipes_dir, by default "
                "configs/ beside the study YAML; set recipes_dir: to the folder of the recipe YAMLs)"
            )
        return path

    def run_dir(self, name: str) -> Path:
        return Path(self.output_dir) / "runs" / name

    def run_argv(self, name: str) -> list[str]:
        """The recipe's own flags, then the study's: same data, seed and folder layout for every run; one
        tracker project named after the study's folder, so the runs' curves overlay."""
        values = {
            "project": Path(self.output_dir).name,
            **self.overrides,
            **self.run_overrides.get(name, {}),
            "dataset_name_or_path": self.dataset_name_or_path,
            "output_dir": str(self.run_dir(name)),
            "seed": self.seed,
        }
        if any(self.run_dir(name).glob("checkpoint-*")):
            values["resume_from_checkpoint"] = "true"
        return ["--config", str(self.recipe(name)), *to_flags(values)]


def to_flags(values: dict[str, Any]) -> list[str]:
    """`{"a": 1, "b": {"x": 2}}` → `--a 1 --b {"x": 2}`, the form `parse_args` reads back."""
    flags = []
    for key, value in values.items():
        if isinstance(value, dict | list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        flags += [f"--{key}", text]
    return flags


def train_all(config: StudyConfig) -> list[Path]:
    """Train each run not finished yet; return every finished run folder, in the study's order."""
    import torch

    from pipeline.run_folder import RunFolder
    from pipeline.train import run

    for name in config.runs:
        config.recipe(name)  # fail on a missing recipe before hours of training, not after
    for name in config.runs:
        if RunFolder(config.run_dir(name)).is_finished():
            print(f"[study] {name}: finished earlier, skipped")
            continue
        print(f"[study] {name}: training")
        run(*parse_args(config.run_argv(name)))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [config.run_dir(name) for name in config.runs]


def report_options(config: StudyConfig, run_dirs: list[Path]) -> ReportOptions:
    """The study's `compare:` section as report options, over its run folders and dataset."""
    report = Path(config.output_dir) / "report"
    return ReportOptions(run_dirs, report, config.dataset_name_or_path, overwrite=True, **config.compare)


def run_study(config: StudyConfig) -> Path | None:
    """Train, then (on the main process) write the report; returns the report folder there."""
    from accelerate import PartialState

    run_dirs = train_all(config)
    if not PartialState().is_main_process:
        return None
    return write_report(report_options(config, run_dirs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="study YAML, e.g. recipes/study.yaml")


def run_cli(args: argparse.Namespace) -> int:
    try:
        output = run_study(StudyConfig.from_yaml(args.config))
    except FileExistsError as error:  # a run's output_dir holds another run; other user errors reach run_main
        raise UserError(str(error)) from error
    if output is not None:
        print(f"[study] report: {output}")
    return 0
