"""Benchmark training: the pipeline's Trainer loop against the bare model step, same model, batch and precision.

In one process, on the recipe's device:
  1. pipeline: `pipeline.train.build_trainer` (the converted dataset, training transforms, DataLoader workers,
     collator, loss, scheduler, gradient clipping) with evaluation and saving off, `max_steps = warmup + steps`;
     a callback times the steps after the warm-up, and when the first step ended (time to first step: start-up,
     dataset open, model build, DataLoader start, compile when on);
  2. bare step: the same model built again (`build_model`, same seed), random pixels and labels already on the
     device, bf16 autocast when the recipe trains in bf16, the recipe's optimizer (fused AdamW by default);
     forward + backward + step, nothing else, timed after the same warm-up. Unlike the Trainer it skips
     gradient clipping (`max_grad_norm`) and the weight-decay parameter groups (biases and norms without
     decay): one flat parameter group with the recipe's weight decay. Both cost the pipeline a little time,
     which the ratio therefore counts against it.
The headline is pipeline img/s ÷ bare img/s (targets on a GPU: issue 3, 0.90 or more; issue 6, 0.95 or more
for each of ViT-B/16, ViT-B/32, ResNet-50 and ConvNeXt-T). Training FLOPs per image are
counted with `torch.utils.flop_counter`; with --peak-tflops (the device's dense bf16 peak, e.g. 989 for an H100
SXM) the model FLOPs utilisation of both loops is reported too.

    python benchmarks/train.py --steps 30 --warmup 10 --peak-tflops 989 \\
        --config recipes/configs/vit_b16_pretrained.yaml --dataset_name_or_path outputs/nih \\
        --per_device_train_batch_size 256 --dataloader_num_workers 15

Flags other than the benchmark's own are the recipe's (`--config` YAML and `--key value` overrides), as for
`recipes/vit.py`; `--synthetic N` trains on N generated images instead of a converted dataset.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import Trainer, TrainerCallback, set_seed  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_common_arguments,
    autocast,
    environment,
    model_description,
    parse_recipe,
    rates,
    scratch_folder,
    synchronize,
)
from benchmarks.machine import report  # noqa: E402
from pipeline.arguments import ModelArguments  # noqa: E402
from pipeline.dataset import finding_names  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.train import build_trainer  # noqa: E402
from pipeline.training_arguments import ChestXrayTrainingArguments  # noqa: E402
from pipeline.transforms import processor_geometry  # noqa: E402

IMPORTS_SECONDS = time.perf_counter() - START


class StepTimer(TrainerCallback):
    """Clock readings at each step end; the device is synced only after the first, the warm-up and the last
    step, so that the GPU's queue keeps running ahead in between, as it does in training."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.marks: list[float] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step in (1, self.warmup, args.max_steps):
            synchronize(self.device)
        self.marks.append(time.perf_counter())


def pipeline_rates(model_args, data_args, training_args, steps: int, warmup: int) -> dict[str, Any]:
    """Images/s (this process's) of the pipeline's training loop after warm-up, and its time to first step:
    imports, then `build_trainer` (dataset open, model build), then `train()` up to the end of step 1
    (DataLoader workers, first batch, compile when on). Generating a --synthetic dataset is not counted."""
    timer = StepTimer(training_args.device, warmup)
    build_start = time.perf_counter()
    trainer, splits, processor = build_trainer(model_args, data_args, training_args, [timer])
    train_start = time.perf_counter()
    trainer.train()
    images_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    overall, median = rates(timer.marks[warmup - 1 :], images_per_step)
    result = {
        "pipeline_img_s": round(overall, 2),
        "pipeline_img_s_median_step": round(median, 2),
        "time_to_first_step_s": round(IMPORTS_SECONDS + timer.marks[0] - build_start, 2),
        "imports_s": round(IMPORTS_SECONDS, 2),
        "build_trainer_s": round(train_start - build_start, 2),
        "train_start_to_first_step_s": round(timer.marks[0] - train_start, 2),
        "train_images": len(splits["train"]),
        "image_size": processor_geometry(processor)[0],
        "names": finding_names(splits["train"]),
    }
    del trainer
    gc.collect()
    if training_args.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def training_flops_per_image(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, bf16: bool) -> float:
    """Forward + backward FLOPs of one image (counted on two), as MFU counts them."""
    with FlopCounterMode(display=False) as counter:
        with autocast(pixels.device, bf16):
            loss = model(pixel_values=pixels[:2], labels=labels[:2]).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def bare_step_rate(
    model_args: ModelArguments,
    training_args: ChestXrayTrainingArguments,
    names: Sequence[str],
    image_size: int,
    steps: int,
    warmup: int,
) -> tuple[float, float, float]:
    """Images/s (overall, median step) of forward + backward + optimizer step on tensors already on the device;
    training FLOPs per image."""
    device, batch = training_args.device, training_args.per_device_train_batch_size
    set_seed(training_args.seed)
    model = build_model(model_args, names=names).to(device).train()
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    optimizer = optimizer_cls(model.parameters(), weight_decay=training_args.weight_decay, **optimizer_kwargs)
    pixels = torch.randn(batch, 3, image_size, image_size, device=device)
    labels = torch.randint(0, 2, (batch, len(names)), device=device).float()
    flops = training_flops_per_image(model, pixels, labels, training_args.bf16)
    if training_args.torch_compile:
        model = torch.compile(
            model, backend=training_args.torch_compile_backend or "inductor", mode=training_args.torch_compile_mode
        )

    def step() -> None:
        with autocast(device, training_args.bf16):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronize(device)
    marks = [time.perf_counter()]
    for _ in range(steps):
        step()
        marks.append(time.perf_counter())
    synchronize(device)
    marks[-1] = time.perf_counter()
    return (*rates(marks, batch), flops)


def measure(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (at least 1)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    add_common_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    overrides = {
        "max_steps": args.warmup + args.steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": "false",
        "report_to": "none",
        "logging_strategy": "no",
        "disable_tqdm": "true",
    }
    with scratch_folder(args.workdir) as workdir:
        model_args, data_args, training_args = parse_recipe(args, rest, workdir, overrides)
        pipeline = pipeline_rates(model_args, data_args, training_args, args.steps, args.warmup)
        names, image_size = pipeline.pop("names"), pipeline["image_size"]
        bare, bare_median, flops = bare_step_rate(model_args, training_args, names, image_size, args.steps, args.warmup)
    result = {
        "benchmark": "train",
        **environment(training_args.device),
        **model_description(model_args, image_size),
        "batch_size": training_args.per_device_train_batch_size,
        "bf16": bool(training_args.bf16),
        "torch_compile": training_args.torch_compile,
        "dataloader_num_workers": training_args.dataloader_num_workers,
        "steps": args.steps,
        "warmup": args.warmup,
        "bare_step_img_s": round(bare, 2),
        "bare_step_img_s_median_step": round(bare_median, 2),
        **pipeline,
        "pipeline_vs_bare": round(pipeline["pipeline_img_s"] / bare, 3),
        "pipeline_vs_bare_median_step": round(pipeline["pipeline_img_s_median_step"] / bare_median, 3),
        "train_gflops_per_image": round(flops / 1e9, 3),
        "pipeline_tflops": round(flops * pipeline["pipeline_img_s"] / 1e12, 3),
        "bare_tflops": round(flops * bare / 1e12, 3),
    }
    if args.peak_tflops:
        result["pipeline_mfu"] = round(result["pipeline_tflops"] / args.peak_tflops, 3)
        result["bare_mfu"] = round(result["bare_tflops"] / args.peak_tflops, 3)
    report(result, args.output)
    return result


if __name__ == "__main__":
    measure()
