"""Kill a real training process at an exact point of a checkpoint write: it sends itself SIGKILL from inside a
patched save method at its Nth call, so where it dies does not depend on timing.

    from crashing import KillPoint, train_until_killed  # pytest puts tests/ on sys.path
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedModel, Trainer
from transformers.trainer_callback import CallbackHandler

from pipeline.run_folder import RunFolder

OWNERS = {
    "Trainer": Trainer,
    "PreTrainedModel": PreTrainedModel,
    "CallbackHandler": CallbackHandler,
    "RunFolder": RunFolder,
}


@dataclass(frozen=True)
class KillPoint:
    """Die at the `call`-th call of `owner.method`, before it runs or after it returns."""

    owner: str
    method: str
    call: int
    after: bool = False


def train_until_killed(argv: Sequence[str], point: KillPoint, timeout: float = 300) -> int:
    """Run the recipes' entry point in a forked process that dies at `point`; return its exit code."""
    process = multiprocessing.get_context("fork").Process(target=_train_and_die, args=(list(argv), point))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        raise TimeoutError(f"training did not reach {point} within {timeout} s")
    return process.exitcode


def _train_and_die(argv: list[str], point: KillPoint) -> None:
    import torch

    from pipeline.train import main

    torch.set_num_threads(1)  # the parent's OpenMP pool does not survive fork
    owner = OWNERS[point.owner]
    original = getattr(owner, point.method)
    calls = 0

    def die() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def patched(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == point.call and not point.after:
            die()
        result = original(*args, **kwargs)
        if calls == point.call:
            die()
        return result

    setattr(owner, point.method, patched)
    sys.exit(main(argv))
