"""Checkpoints that survive a crash: each save is marked complete once every process has written its part, and
resuming takes the newest marked one.

The Trainer writes straight into `checkpoint-N/` (staging to a temporary folder broke DeepSpeed and multi-node
runs upstream), so a process killed while saving leaves a folder that looks like a checkpoint and is not one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from pipeline.arguments import ConfigError
from pipeline.run_folder import replacing

MARKER = "checkpoint-complete.json"
# Written while a save is in progress by checkpointing integrations of the Trainer (Kubeflow Trainer's);
# the installed transformers (5.25) writes none.
INCOMPLETE_SENTINEL = "checkpoint-is-incomplete.txt"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed from, named with the one that can."""


class TrainingFinished(Exception):
    """Raised by `CrashSafeCheckpoints` when the checkpoint resumed from ends the training: no step is left."""

    def __init__(self, global_step: int) -> None:
        super().__init__(f"training had finished at step {global_step}")
        self.global_step = global_step


class CrashSafeCheckpoints(TrainerCallback):
    """Marks each checkpoint complete after the Trainer's save (`on_save` runs after `_save_checkpoint` returns),
    and stops a resumed run whose training had already finished before it trains a step too many."""

    def on_train_begin(self, args, state, control, **kwargs):
        # The Trainer's loop runs one step before it checks max_steps: a finished run resumed would train step max+1.
        if state.global_step >= state.max_steps > 0:
            raise TrainingFinished(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        # Resumed from an older checkpoint, this run may write a newer one again: until it has, that one is stale.
        if args.should_save:
            (checkpoint_dir(args.output_dir, state.global_step) / MARKER).unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        PartialState().wait_for_everyone()  # every process has written its shards and RNG state
        if args.should_save:
            write_marker(checkpoint_dir(args.output_dir, state.global_step), state.global_step)


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def write_marker(folder: Path, step: int) -> None:
    """Record every file of a finished save with its size; written whole or not at all."""
    with replacing(folder / MARKER) as partial:
        files = {
            str(path.relative_to(folder)): path.stat().st_size
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name not in (MARKER, partial.name)
        }
        partial.write_text(json.dumps({"global_step": step, "files": files}, indent=1), encoding="utf-8")


def incompleteness(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    if (folder / INCOMPLETE_SENTINEL).exists():
        return f"marked incomplete by {INCOMPLETE_SENTINEL}"
    try:
        files = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"no {MARKER}: the run stopped while writing it"
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MARKER} is unreadable"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, saved as {size}"
    return None


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    problem: str | None  # None: complete

    def describe(self) -> str:
        return f"{self.path.name} ({self.problem})" if self.problem else self.path.name


def find_checkpoints(output_dir: Path) -> list[Checkpoint]:
    """The `checkpoint-N` folders of a run, newest first, each with what makes it incomplete."""
    found = []
    for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if output_dir.is_dir() else ():
        step = path.name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
        if path.is_dir() and step.isdigit():
            found.append(Checkpoint(path, int(step), incompleteness(path)))
    return sorted(found, key=lambda checkpoint: checkpoint.step, reverse=True)


def resume_requested(value: str | None) -> bool:
    return value is not None and value.lower() not in ("false", "no", "")


def resolve_resume(value: str | None, output_dir: Path, *, announce: bool = True) -> str | None:
    """`resume_from_checkpoint`: a checkpoint folder, or true/last for the newest complete one in output_dir.

    With only incomplete checkpoints, training starts over (they hold nothing to resume from, and are kept).
    """
    if not resume_requested(value):
        return None
    if value.lower() not in ("true", "last", "yes"):
        path = Path(value)
        if not path.is_dir():
            raise CheckpointError(f"resume_from_checkpoint={value}: no such checkpoint folder")
        problem = incompleteness(path)
        if problem:
            newest = next((c for c in find_checkpoints(path.parent) if c.problem is None), None)
            instead = f"the newest complete one is {newest.path}" if newest else f"{path.parent} has no complete one"
            raise CheckpointError(f"resume_from_checkpoint={value} is incomplete ({problem}); {instead}")
        return value
    found = find_checkpoints(output_dir)
    if not found:
        raise CheckpointError(f"resume_from_checkpoint={value}: no checkpoint-* folder in {output_dir}")
    newer = [c for c in found if c.problem is not None]
    complete = next((c for c in found if c.problem is None), None)
    if complete is not None:
        newer = [c for c in newer if c.step > complete.step]
    skipped = "; skipped " + ", ".join(c.describe() for c in newer) if newer else ""
    if announce:
        if complete is None:
            print(f"no complete checkpoint in {output_dir}{skipped}: training from the start")
        else:
            print(f"resuming from {complete.path.name}, the newest complete checkpoint{skipped}")
    return str(complete.path) if complete else None
