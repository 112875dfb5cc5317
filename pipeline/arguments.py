"""Configuration as data: a YAML recipe → dataclasses via `HfArgumentParser`; command-line flags win over YAML.

Like alignment-handbook, the YAML is flat: each key is a field of one of the three dataclasses below, and a key
that none of them has is an error naming that key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.training_arguments import ChestXrayTrainingArguments


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


RECIPE_USAGE = "usage: {prog} --config {configs}/RECIPE.yaml [--key value ...]"


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, ChestXrayTrainingArguments]:
    """Parse `--config recipe.yaml [--key value …]`: the YAML gives defaults, flags override them."""
    values, rest = read_recipe(argv)
    parser = _training_parser()
    if "--help-all" in rest:
        parser.print_help()
        raise SystemExit(0)
    apply_yaml_defaults(parser, values)
    try:
        *dataclasses_, _namespace, unknown = parser.parse_args_into_dataclasses(
            args=rest, look_for_args_file=False, return_remaining_strings=True
        )
    except ConfigError:
        raise
    except ValueError as error:  # TrainingArguments' own checks of the combination
        raise ConfigError(str(error)) from None
    if unknown:
        raise ConfigError(f"unknown flag(s) {' '.join(unknown)}: spell a flag out in full; --help-all lists them")
    return tuple(dataclasses_)


def read_recipe(argv: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The recipe's YAML values and the other flags; answers no arguments, `--help` and a broken YAML at once,
    before transformers is imported."""
    argv = sys.argv[1:] if argv is None else argv
    config_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_parser.add_argument("--config", type=Path)
    config_parser.add_argument("-h", "--help", action="store_true")
    known, rest = config_parser.parse_known_args(argv)
    if known.help:
        print(recipe_help())
        raise SystemExit(0)
    if not argv:
        print(usage(), file=sys.stderr)
        raise ConfigError(f"no recipe: pass --config with one of {configs_dir()}/*.yaml (--help lists the keys)")
    return (load_yaml(known.config) if known.config is not None else {}), rest


def _training_parser() -> argparse.ArgumentParser:
    """HfArgumentParser over the three dataclasses: whole flags only, and its errors are `ConfigError`s."""
    from transformers import HfArgumentParser

    from pipeline.training_arguments import ChestXrayTrainingArguments

    class RecipeParser(HfArgumentParser):
        def error(self, message: str):  # argparse would print the 130-line usage first
            raise ConfigError(message)

    # allow_abbrev=False: `--learning_rat 5e-4` is an unknown flag, not a silent `--learning_rate`.
    parser = RecipeParser((ModelArguments, DataArguments, ChestXrayTrainingArguments), prog=_prog(), allow_abbrev=False)
    parser.add_argument("--config", type=Path, help="YAML recipe; flags given after it override its keys.")
    return parser


def _prog() -> str:
    return Path(sys.argv[0]).name or "recipe"


def configs_dir() -> str:
    """Where the shipped recipes are, as the user would type it: configs/ beside the running recipe script."""
    return (Path(sys.argv[0]).parent / "configs").as_posix()


def usage() -> str:
    return RECIPE_USAGE.format(prog=_prog(), configs=configs_dir())


def recipe_help() -> str:
    """A short help: the recipes, then the model and data keys; TrainingArguments' 120 more under --help-all."""
    recipes = sorted(path.stem for path in Path(configs_dir()).glob("*.yaml"))
    lines = [
        usage(),
        "",
        "Train a multi-label chest X-ray classifier from a YAML recipe; a --key flag overrides the recipe's key.",
        *textwrap.wrap(f"Recipes in {configs_dir()}/: {', '.join(recipes) or '(none here)'}", 110),
    ]
    for group in (ModelArguments, DataArguments):
        lines += ["", f"{group.__name__}: {group.__doc__.strip()}"]
        for item in dataclasses.fields(group):
            lines.append(f"  --{item.name:<22} {item.metadata.get('help', '')}".rstrip())
    lines += [
        "",
        "Training: every field of transformers' TrainingArguments (output_dir, learning_rate, num_train_epochs, …),",
        "plus loss_pos_weight and overwrite_output_dir. --help-all lists them all (imports transformers: slower).",
    ]
    return "\n".join(lines)


def load_yaml(path: Path) -> dict[str, Any]:
    """The recipe's keys and values; a syntax error or a Python tag is one line with file:line:column."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        if isinstance(error, yaml.constructor.ConstructorError) and "tag" in (error.problem or ""):
            raise ConfigError(f"{where}: {error.problem}; a recipe holds plain values only") from None
        raise ConfigError(f"{where}: YAML syntax error: {error.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"recipe {path} is not readable YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of keys to values, got {type(values).__name__}")
    return {"__source__": str(path), **values}


def apply_yaml_defaults(parser: argparse.ArgumentParser, values: dict[str, Any]) -> None:
    """Make each YAML value the default of its flag, so a flag on the command line still wins."""
    if not values:
        return
    source = values.pop("__source__")
    unknown = sorted(set(values) - {action.dest for action in parser._actions})
    if unknown:
        raise ConfigError(f"recipe {source}: unknown key(s) {', '.join(unknown)} (not a model, data or training field)")
    # set_defaults reaches every flag of a key: a bool that defaults to true has two (`--x`, `--no_x`), and argparse
    # takes the default of the first, so setting only one would silently ignore `x: false`.
    parser.set_defaults(**values)
    for action in parser._actions:
        if action.dest in values:
            action.required = False


def resolved_config(
    model_args: ModelArguments, data_args: DataArguments, training_args: ChestXrayTrainingArguments
) -> dict[str, dict[str, Any]]:
    """The run's full configuration, as saved to `run_config.yaml` beside the model."""
    training = {k: v for k, v in training_args.to_dict().items() if not k.startswith("_") and "token" not in k}
    return {"model": vars(model_args).copy(), "data": vars(data_args).copy(), "training": training}
