"""Benchmark what tracking adds to the training loop: the callbacks' own time per step and per log.

On the training path the trackers cost (1) `ThroughputCallback.on_step_end` at every step and (2) at every log
(`logging_steps`) `ThroughputCallback.on_log` plus the tracker's `on_log`, here transformers' `TrackioCallback`
with a real local trackio run (stored in `TRACKIO_DIR`, else a temporary folder, by trackio's background thread).
Evaluation logs (about 25 validation metrics) are timed separately. The Trainer's own logging (the loss
all-reduce, `.item()`) is there without a tracker too and is not counted.

    python benchmarks/tracking.py --calls 2000 --step-ms 101 --logging-steps 10

With `--step-ms` (the time of one training step, e.g. 101 ms: ViT-B/16, batch 256, at the 2,531 img/s of the
H100 anchor) the overhead is also given as a fraction of the training time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import environment, report  # noqa: E402
from pipeline.labels import FINDINGS  # noqa: E402


def per_call_us(function, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def measure(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls of each callback")
    parser.add_argument("--step-ms", type=float, default=None, help="one training step's time, for the fraction")
    parser.add_argument("--logging-steps", type=int, default=10, help="steps between training logs")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON line to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        # trackio reads TRACKIO_DIR when it is imported (below): a folder the caller set stays, else scratch.
        os.environ.setdefault("TRACKIO_DIR", scratch)
        from transformers import TrainerControl, TrainerState
        from transformers.integrations import TrackioCallback

        from pipeline.tracking import ThroughputCallback
        from pipeline.training_arguments import ChestXrayTrainingArguments

        training_args = ChestXrayTrainingArguments(
            output_dir=str(Path(scratch) / "benchmark"), report_to="trackio", use_cpu=True, project="benchmark"
        )
        state, control = TrainerState(), TrainerControl()
        state.is_world_process_zero = True
        throughput, tracker = ThroughputCallback(), TrackioCallback()
        tracker.setup(training_args, state, model=None)

        def training_log() -> None:
            throughput.on_step_end(training_args, state, control)
            logs = {"loss": 0.25, "grad_norm": 1.5, "learning_rate": 1e-4, "epoch": 1.0}
            throughput.on_log(training_args, state, control, logs=logs)
            tracker.on_log(training_args, state, control, logs=logs)

        evaluation = {f"eval_auroc_{finding}": 0.8 for finding in FINDINGS}
        evaluation |= {f"eval_{key}": 0.5 for key in ("auroc_mean", "auroc_micro", "accuracy", "f1_macro", "map")}

        step_us = per_call_us(lambda: throughput.on_step_end(training_args, state, control), args.calls)
        log_us = per_call_us(training_log, args.calls)
        eval_us = per_call_us(lambda: tracker.on_log(training_args, state, control, logs=dict(evaluation)), args.calls)
        tracker.on_train_end(training_args, state, control)

    result = {
        "benchmark": "tracking",
        **environment(),
        "calls": args.calls,
        "step_callback_us": round(step_us, 2),
        "training_log_us": round(log_us, 2),
        "evaluation_log_us": round(eval_us, 2),
    }
    if args.step_ms:
        per_step_us = step_us + log_us / args.logging_steps
        result |= {
            "step_ms": args.step_ms,
            "logging_steps": args.logging_steps,
            "overhead_fraction_of_training": round(per_step_us / (args.step_ms * 1e3), 6),
        }
    report(result, args.output)
    return result


if __name__ == "__main__":
    measure()
