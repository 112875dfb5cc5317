"""`TrainingArguments` with this project's defaults: imports transformers and torch, so only a run loads it.

Apart from `pipeline.arguments`, so that a recipe's `--help` and its YAML checks answer at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from pipeline.arguments import ConfigError
from pipeline.hardware import bf16_supported
from pipeline.locations import check_repo_id
from pipeline.tracking import check_report_to, default_report_to


@dataclass
class ChestXrayTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults for multi-label X-ray classification and a few extra fields."""

    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_strategy: str = "steps"
    logging_steps: float = 10
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "auroc_mean"
    greater_is_better: bool | None = True
    # The image column must reach the transform, which the Trainer's column pruning would drop.
    remove_unused_columns: bool = False
    label_names: list[str] | None = field(default_factory=lambda: ["labels"])
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on where the GPU has it."}
    )
    dataloader_num_workers: int | None = field(
        default=None, metadata={"help": "DataLoader workers per process; default: this process's share of the CPUs."}
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pinned host memory for faster copies to the GPU; default: on with a GPU."}
    )
    dataloader_persistent_workers: bool | None = field(
        default=None, metadata={"help": "Keep workers between epochs; default: on when there are workers."}
    )
    # The multi-label BCE is a per-batch mean; the token-count averaging meant for language models would
    # multiply it by the number of processes.
    average_tokens_across_devices: bool = False
    loss_pos_weight: str | None = field(
        default=None,
        metadata={"help": "'auto': weight each finding's positives by negatives/positives of the training split."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a run already in output_dir (otherwise that is an error)."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036  (the order HfArgumentParser reads)
        default=None,
        metadata={"help": "Trackers to log to (trackio, tensorboard, none, …); default: trackio where installed."},
    )
    project: str = field(default="chestxray14", metadata={"help": "Tracker project (trackio) the run is logged in."})
    run_name: str | None = field(
        default=None, metadata={"help": "The run's name in the tracker; default: the name of output_dir's folder."}
    )

    def __post_init__(self) -> None:
        if self.report_to is None:
            self.report_to = default_report_to()
        if self.bf16 is None:
            self.bf16 = not self.use_cpu and bf16_supported()
        if self.dataloader_num_workers is None:
            self.dataloader_num_workers = default_num_workers()
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = not self.use_cpu and torch.cuda.is_available()
        if self.dataloader_persistent_workers is None:
            self.dataloader_persistent_workers = self.dataloader_num_workers > 0
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id (ORG/NAME of the model repo)")
        if self.push_to_hub:
            check_repo_id(self.hub_model_id, "hub_model_id")
        if self.loss_pos_weight not in (None, "auto"):
            raise ConfigError(f"loss_pos_weight must be 'auto' or unset, got {self.loss_pos_weight!r}")
        super().__post_init__()
        check_report_to(self.report_to)
        if self.run_name is None:
            # Stable across resumes: trackio continues a run of the same name, so its curves go on.
            self.run_name = Path(self.output_dir).name
        if self.lr_scheduler_type == "reduce_lr_on_plateau" and self.greater_is_better:
            # A plateau of AUROC means it stopped rising; torch's default mode "min" would cut the rate as it rises.
            self.lr_scheduler_kwargs = {"mode": "max", **(self.lr_scheduler_kwargs or {})}


def default_num_workers() -> int:
    """This process's share of the CPUs, one left for the process itself."""
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(16, (os.cpu_count() or 1) // local_world_size - 1))
