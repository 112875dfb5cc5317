"""What the training, data-loading and prediction benchmarks share: the recipe with the benchmark's overrides,
an optional generated dataset, device timing, the machine description (the JSON line: `benchmarks.machine`).

Each script parses its own flags first (`argparse.parse_known_args`); the rest is a training recipe exactly as
`recipes/*.py` take it (`--config recipe.yaml --key value …`, through `pipeline.arguments.parse_args`).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks import machine
from pipeline.arguments import DataArguments, ModelArguments, parse_args
from pipeline.convert import convert
from pipeline.synthetic import generate_nih_tree
from pipeline.training_arguments import ChestXrayTrainingArguments

Recipe = tuple[ModelArguments, DataArguments, ChestXrayTrainingArguments]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        default=None,
        help="generate and convert an NIH-format dataset of N images instead of "
        "--dataset_name_or_path (pipeline.synthetic, written under --workdir)",
    )
    parser.add_argument("--synthetic-size", type=int, default=256, help="side of the generated images (px)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON line to this file")


def recipe_argv(rest: Sequence[str], workdir: Path, overrides: dict[str, Any]) -> list[str]:
    """The recipe flags with a scratch output_dir first (a user's flag wins) and `overrides` last (they win)."""
    forced = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return ["--output_dir", str(workdir / "trainer_output"), *rest, *forced]


def synthetic_dataset(workdir: Path, n_images: int, image_size: int) -> Path:
    """A converted dataset of `n_images` generated X-rays (reused when already in `workdir`)."""
    output = workdir / f"synthetic_{n_images}_{image_size}"
    if not output.is_dir():
        generate_nih_tree(
            workdir / f"nih_{n_images}_{image_size}", n_images=n_images, image_size=image_size, modes=("L",)
        )
        convert(workdir / f"nih_{n_images}_{image_size}", output, image_size=image_size)
    return output


def parse_recipe(args: argparse.Namespace, rest: Sequence[str], workdir: Path, overrides: dict[str, Any]) -> Recipe:
    """The recipe with the benchmark's overrides, on the generated dataset when `--synthetic N` is given."""
    if args.synthetic is not None:
        if any(item.startswith("--dataset_name_or_path") for item in rest):
            raise SystemExit("error: give --synthetic N or --dataset_name_or_path, not both")
        overrides = {
            "dataset_name_or_path": synthetic_dataset(workdir, args.synthetic, args.synthetic_size),
            **overrides,
        }
    return parse_args(recipe_argv(rest, workdir, overrides))


@contextmanager
def scratch_folder(workdir: Path | None) -> Iterator[Path]:
    """`workdir` (kept), or a temporary folder removed at the end."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    folder = Path(tempfile.mkdtemp(prefix="chestxray-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read measures it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool) -> Any:
    """The mixed precision the Trainer uses for `bf16=True`: bf16 autocast on the training device."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def rates(marks: Sequence[float], images_per_step: int) -> tuple[float, float]:
    """Images/s from clock readings at step ends (first = start): overall, and at the median step.

    The overall rate is the headline on a GPU. On a CPU shared with other jobs, the median step is the robust
    one: a burst of foreign load slows a few steps, not the median (CPU readings need no device sync).
    """
    durations = [end - start for start, end in itertools.pairwise(marks)]
    return images_per_step * len(durations) / (marks[-1] - marks[0]), images_per_step / statistics.median(durations)


def environment(device: torch.device) -> dict[str, Any]:
    """`benchmarks.machine.environment` with the name of the training device."""
    return machine.environment(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")


def model_description(model_args: ModelArguments, image_size: int) -> dict[str, Any]:
    return {
        "model": model_args.model_name_or_path or model_args.timm_architecture or model_args.model_type,
        "pretrained": model_args.pretrained,
        "config_overrides": model_args.config_overrides,
        "image_size": image_size,
    }
