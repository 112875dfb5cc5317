"""Training you can watch: the default tracker, and what the Trainer's tracker callbacks do not log themselves.

The trackers are transformers' own integrations (`report_to`: trackio, tensorboard, …). They log loss, learning
rate and every validation metric; this module adds images/s to each training log, hands the test metrics to the
trackers that ignore `Trainer.predict`, and ends the tracker's run after them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Mapping, Sequence

from transformers import Trainer, TrainerCallback
from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

from pipeline.errors import UserError

logger = logging.getLogger(__name__)

NO_TRACKER_HINT = (
    "no experiment tracker installed, so report_to=none: `pip install -e .[tracking]` logs runs to trackio "
    "(or set report_to: tensorboard)"
)
INSTALL = {"trackio": "pip install -e .[tracking]"}
# Integrations whose callback logs `Trainer.predict`'s metrics itself (`on_predict`); the others only see `log`.
LOGS_PREDICTIONS = {"trackio"}


def default_report_to() -> str:
    """trackio where it is installed, otherwise none, said once per run on the main process."""
    if importlib.util.find_spec("trackio") is not None:
        return "trackio"
    if int(os.environ.get("RANK", "0")) == 0:
        logger.warning(NO_TRACKER_HINT)
    return "none"


class TrackerError(UserError, ValueError):
    """A `report_to` that names a tracker transformers does not know, or one that is not installed."""


def check_report_to(report_to: Sequence[str]) -> None:
    """Fail at parse time, not with a traceback after the dataset and model are loaded."""
    unknown = [name for name in report_to if name not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise TrackerError(
            f"report_to: unknown tracker {', '.join(unknown)} (known: {', '.join(INTEGRATION_TO_CALLBACK)}, none)"
        )
    available = get_available_reporting_integrations()
    for name in report_to:
        if name not in available:
            raise TrackerError(f"report_to: {name} is not installed ({INSTALL.get(name, f'pip install {name}')})")


class ThroughputCallback(TrainerCallback):
    """Adds `images_per_second` to each training log: images of the steps since the last log, over the time
    spent on them (loading and training; evaluation and checkpointing excluded). The count is nominal
    (steps × total batch size), as in the Trainer's own `train_samples_per_second`."""

    def __init__(self) -> None:
        self.steps = 0
        self.seconds = 0.0
        self.clock = time.perf_counter()

    def restart_clock(self, *args, **kwargs) -> None:
        self.clock = time.perf_counter()

    on_train_begin = on_evaluate = on_save = restart_clock

    def on_step_end(self, args, state, control, **kwargs) -> None:
        now = time.perf_counter()
        self.steps += 1
        self.seconds += now - self.clock
        self.clock = now

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if logs is None or "loss" not in logs or not self.steps or self.seconds <= 0:
            return
        images = self.steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        logs["images_per_second"] = round(images / self.seconds, 3)
        self.steps, self.seconds = 0, 0.0


def add_tracking(trainer: Trainer) -> None:
    """Measure throughput; first in the callback list, so the trackers' callbacks log the value it adds."""
    trainer.callback_handler.callbacks.insert(0, ThroughputCallback())


def finish_tracking(trainer: Trainer, test_metrics: Mapping[str, float]) -> None:
    """Give the test metrics to the trackers that do not log predictions themselves (TensorBoard, …), then end
    the trackio run that the Trainer's predictions reopened after training: trackio stores its buffered logs
    when a run ends, not when the process goes on to other work (a study's next run, a test)."""
    if set(trainer.args.report_to) - LOGS_PREDICTIONS:
        trainer.log(dict(test_metrics))
    if "trackio" in trainer.args.report_to:
        import trackio

        if trackio.context_vars.current_run.get() is not None:
            trackio.finish()
