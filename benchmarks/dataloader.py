"""Benchmark the training DataLoader alone: `trainer.get_train_dataloader()` of the pipeline (the converted
dataset, the training transforms, the collator, the Trainer's sampler and pinning), per worker count, and the
evaluation DataLoader (the image processor) at the largest worker count. With `augment_on_device` (the default
on a GPU) the workers only decode and each batch then goes through the Trainer's `device_augmentation`, as in
training; on a CPU the workers augment (pass `--augment_on_device true` to time the device path there).

For each --workers count: the time to the first batch (worker start-up) and images/s over --batches batches
after --warmup batches. Compare with `benchmarks/train.py`'s bare step: the loader keeps a GPU busy only if it
delivers at least the bare step's images/s; issue 6 asks for 1.5x or more. Pass that run's `bare_step_img_s` as
--bare-img-s to get each rate as a ratio to it (`train_workers_N_vs_bare`).

    python benchmarks/dataloader.py --workers 0 4 8 15 --batches 50 \\
        --config recipes/configs/vit_b16_pretrained.yaml --dataset_name_or_path outputs/nih \\
        --per_device_train_batch_size 256

Flags other than the benchmark's own are the recipe's, as for `benchmarks/train.py`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_common_arguments,
    environment,
    model_description,
    parse_recipe,
    scratch_folder,
    synchronize,
)
from benchmarks.machine import report  # noqa: E402
from pipeline.train import build_trainer  # noqa: E402
from pipeline.transforms import processor_geometry  # noqa: E402


def loader_rate(
    loader: Iterable[dict],
    batches: int,
    warmup: int,
    device: torch.device,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float]:
    """(seconds to the first batch, images/s over `batches` batches after `warmup`), each batch augmented by
    `augment` when given, cycling epochs if needed (each new epoch then starts its workers again: give a
    dataset of more than warmup + batches batches)."""
    batches_iter = iter(itertools.chain.from_iterable(itertools.repeat(loader)))

    def next_batch() -> dict:
        batch = next(batches_iter)
        if augment is not None:
            batch["pixel_values"] = augment(batch["pixel_values"])
        return batch

    start = time.perf_counter()
    next_batch()
    first = time.perf_counter() - start
    for _ in range(warmup):
        next_batch()
    synchronize(device)
    images, timed_start = 0, time.perf_counter()
    for _ in range(batches):
        images += len(next_batch()["labels"])
    synchronize(device)
    return first, images / (time.perf_counter() - timed_start)


def measure(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches after the first")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation DataLoader")
    parser.add_argument(
        "--bare-img-s",
        type=float,
        default=None,
        metavar="RATE",
        help="the bare model step's images/s (benchmarks/train.py, same machine and recipe): "
        "report each training loader rate as a ratio to it (issue 6's target: >= 1.5)",
    )
    add_common_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    if args.bare_img_s is not None and args.bare_img_s <= 0:
        parser.error("--bare-img-s must be a positive images/s rate")
    overrides = {"report_to": "none"}
    with scratch_folder(args.workdir) as workdir:
        model_args, data_args, training_args = parse_recipe(args, rest, workdir, overrides)
        trainer, splits, processor = build_trainer(model_args, data_args, training_args)
        device = training_args.device
        result: dict[str, Any] = {
            "benchmark": "dataloader",
            **environment(device),
            **model_description(model_args, processor_geometry(processor)[0]),
            "batch_size": training_args.per_device_train_batch_size,
            "eval_batch_size": training_args.per_device_eval_batch_size,
            "train_images": len(splits["train"]),
            "augment_on_device": trainer.device_augmentation is not None,
        }
        for workers in args.workers:
            trainer.args.dataloader_num_workers = workers
            trainer.args.dataloader_persistent_workers = False  # each count starts its own workers
            first, rate = loader_rate(
                trainer.get_train_dataloader(), args.batches, args.warmup, device, trainer.device_augmentation
            )
            result[f"train_workers_{workers}_first_batch_s"] = round(first, 2)
            result[f"train_workers_{workers}_img_s"] = round(rate, 1)
            if args.bare_img_s:
                result[f"train_workers_{workers}_vs_bare"] = round(rate / args.bare_img_s, 3)
        if not args.no_eval:
            trainer.args.dataloader_num_workers = max(args.workers)
            first, rate = loader_rate(trainer.get_eval_dataloader(), args.batches, args.warmup, device)
            result[f"eval_workers_{max(args.workers)}_first_batch_s"] = round(first, 2)
            result[f"eval_workers_{max(args.workers)}_img_s"] = round(rate, 1)
    report(result, args.output)
    return result


if __name__ == "__main__":
    measure()
