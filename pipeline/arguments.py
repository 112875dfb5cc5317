"""Configuration as data: a YAML recipe → dataclasses via `HfArgumentParser`; command-line flags win over YAML.

Like alignment-handbook, the YAML is flat: each key is a field of one of the three dataclasses below, and a key
that none of them has is an error naming that key.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from pipeline.errors import UserError
from pipeline.hardware import bf16_supported
from pipeline.tracking import check_report_to, default_report_to


class ConfigError(UserError, ValueError):
    """A recipe or flag that cannot describe a run; the message names the key."""


@dataclass
class ModelArguments:
    """Which model to train and how to initialise it."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of the checkpoint (its config, weights, image processor)."},
    )
    pretrained: bool = field(
        default=True,
        metadata={"help": "Load the checkpoint's weights (fine-tune); false: same architecture, random weights."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": "Config type to build from scratch when there is no checkpoint: vit, resnet, paper_cnn, …"},
    )
    config_overrides: dict | str | None = field(
        default=None,
        metadata={"help": 'Config fields to change, as a YAML mapping or JSON string: {"hidden_size": 64}.'},
    )
    timm_architecture: str | None = field(
        default=None,
        metadata={"help": "A timm architecture (densenet121, …) wrapped by transformers' TimmWrapper."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input size in pixels; default: the checkpoint's image processor."}
    )
    attn_implementation: str | None = field(
        default="sdpa", metadata={"help": "Attention backend for transformer models (sdpa, eager, …)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow checkpoints with custom code."})

    def __post_init__(self) -> None:
        if isinstance(self.config_overrides, str):
            try:
                self.config_overrides = json.loads(self.config_overrides)
            except json.JSONDecodeError as error:
                raise ConfigError(f"config_overrides is not a JSON object: {error}") from None
        if self.model_name_or_path is None and self.model_type is None and self.timm_architecture is None:
            raise ConfigError("set model_name_or_path, model_type or timm_architecture")
        if self.model_name_or_path is None and self.timm_architecture is None:
            self.pretrained = False  # a bare config has no weights to load: say so in run_config.yaml


@dataclass
class DataArguments:
    """Which dataset to read and how to augment it."""

    dataset_name_or_path: str = field(
        metadata={"help": "A folder written by `chestxray convert`, or a Hub dataset id."},
    )
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate training (debugging)."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Truncate validation and test (debugging; test metrics then are partial)."}
    )
    crop_scale_min: float = field(
        default=0.8, metadata={"help": "RandomResizedCrop keeps between this fraction and all of the image area."}
    )
    rotation_degrees: float = field(default=7.0, metadata={"help": "Random rotation range, ± degrees."})
    horizontal_flip: bool = field(
        default=False, metadata={"help": "Random horizontal flip; off by default since it moves the heart."}
    )
    augment_on_device: bool | None = field(
        default=None,
        metadata={
            "help": "Augment each batch on the accelerator (workers only decode); default: on when training on a GPU."
        },
    )


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


ARGUMENT_CLASSES = (ModelArguments, DataArguments, ChestXrayTrainingArguments)


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, ChestXrayTrainingArguments]:
    """Parse `--config recipe.yaml [--key value …]`: the YAML gives defaults, flags override them."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("--config", type=Path)
    known, rest = config_parser.parse_known_args(argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.add_argument("--config", type=Path, help="YAML recipe; flags given after it override its keys.")
    if known.config is not None:
        apply_yaml_defaults(parser, load_yaml(known.config))
    try:
        *dataclasses_, _namespace = parser.parse_args_into_dataclasses(args=rest, look_for_args_file=False)
    except ConfigError:
        raise
    except ValueError as error:  # unknown flags, and TrainingArguments' own checks of the combination
        raise ConfigError(str(error)) from None
    return tuple(dataclasses_)


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of keys to values, got {type(values).__name__}")
    return {"__source__": str(path), **values}


def apply_yaml_defaults(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """Make each YAML value the default of its flag, so a flag on the command line still wins."""
    source = values.pop("__source__")
    actions = {action.dest: action for action in parser._actions}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigError(f"recipe {source}: unknown key(s) {', '.join(unknown)} (not a model, data or training field)")
    for key, value in values.items():
        actions[key].default = value
        actions[key].required = False


def resolved_config(
    model_args: ModelArguments, data_args: DataArguments, training_args: ChestXrayTrainingArguments
) -> dict[str, dict[str, Any]]:
    """The run's full configuration, as saved to `run_config.yaml` beside the model."""
    training = {k: v for k, v in training_args.to_dict().items() if not k.startswith("_") and "token" not in k}
    return {"model": vars(model_args).copy(), "data": vars(data_args).copy(), "training": training}
