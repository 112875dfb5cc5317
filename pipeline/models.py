"""One factory for every classifier the pipeline trains, and the image processor that goes with it.

Models: any `AutoModelForImageClassification` checkpoint (Hub id or local folder) fine-tuned with a fresh
14-output head or re-initialised from its config, a fresh config of any `model_type` (the paper's small
ViTs are `model_type="vit"` + `config_overrides`), the paper's CNN (`model_type="paper_cnn"`), and timm
models through transformers' `TimmWrapper` (`timm_architecture=...`, or a `timm/...` Hub checkpoint).
Every config gets the finding names as id2label/label2id and `problem_type="multi_label_classification"`,
so `config.json` alone tells the Hub widget and `pipeline("image-classification")` to apply a sigmoid.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import timm
import torch
from huggingface_hub import constants, try_to_load_from_cache
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    BaseImageProcessor,
    PreTrainedConfig,
    PreTrainedModel,
    TimmWrapperConfig,
    TimmWrapperImageProcessor,
    ViTImageProcessor,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from pipeline import paper_cnn  # noqa: F401  (registers model_type "paper_cnn" with the Auto classes)
from pipeline.errors import UserError
from pipeline.labels import id2label, label2id
from pipeline.locations import looks_like_local_path

logger = logging.getLogger(__name__)

MULTI_LABEL = "multi_label_classification"
TIMM_MODEL_TYPE = "timm_wrapper"
# timm's modules of ViTs with a patch grid and a class token (`explain` reads their attention).
TIMM_VIT_MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit", "beit", "eva")
DEFAULT_IMAGE_SIZE = 224


class ModelConfigError(UserError, ValueError):
    """A model specification that cannot be built; the message says which field and why."""


class ModelSpec(Protocol):
    """What `build_model` reads; `pipeline.arguments.ModelArguments` is one."""

    model_name_or_path: str | None  # Hub id or local folder of a checkpoint
    pretrained: bool  # load the checkpoint's weights; without a checkpoint, weights are random anyway
    model_type: str | None  # config type to build without a checkpoint: "vit", "resnet", "paper_cnn", ...
    config_overrides: Mapping[str, Any] | None  # config fields to change, e.g. {"hidden_size": 64}
    image_size: int | None  # input side in pixels; None: the checkpoint's / config's
    attn_implementation: str | None  # None or "sdpa": SDPA where the model supports it
    timm_architecture: str | None  # e.g. "densenet121.tv_in1k", built through transformers' TimmWrapper
    trust_remote_code: bool


def _timm_pretrained_cfg(architecture: str) -> dict[str, Any]:
    pretrained_cfg = timm.models.get_pretrained_cfg(architecture)
    if pretrained_cfg is None:
        raise ModelConfigError(f"unknown timm architecture {architecture!r} (see timm.list_models())")
    return pretrained_cfg.to_dict()


def _checkpoint(spec: ModelSpec) -> str | None:
    """The checkpoint to start from: model_name_or_path, or the Hub copy of a pretrained timm architecture."""
    if spec.model_name_or_path is not None:
        if spec.timm_architecture is not None:
            raise ModelConfigError(
                "timm_architecture names a model to build without a checkpoint; do not combine it with "
                f"model_name_or_path={spec.model_name_or_path!r}"
            )
        return spec.model_name_or_path
    if spec.timm_architecture is not None and spec.pretrained:
        return _timm_pretrained_cfg(spec.timm_architecture)["hf_hub_id"]  # e.g. timm/densenet121.tv_in1k
    return None


def _check_offline_cache(checkpoint: str) -> None:
    """Offline, a Hub checkpoint must already be in the cache: say so at once and name it."""
    if not constants.is_offline_mode() or looks_like_local_path(checkpoint) or Path(checkpoint).exists():
        return
    if not isinstance(try_to_load_from_cache(checkpoint, "config.json"), str):
        raise ModelConfigError(
            f"{checkpoint!r} is not in the local Hub cache and HF_HUB_OFFLINE=1 forbids downloading it: download "
            f"it once online (`hf download {checkpoint}`), or set model_name_or_path to a local folder holding it"
        )


def _load_config(spec: ModelSpec, checkpoint: str) -> PreTrainedConfig:
    """The checkpoint's config; a refused custom-code model or an unreachable checkpoint is one line naming it."""
    _check_offline_cache(checkpoint)
    try:
        return AutoConfig.from_pretrained(checkpoint, trust_remote_code=spec.trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelConfigError(
            f"{checkpoint!r} needs its own code to load (auto_map in its config.json): read that code, then set "
            "trust_remote_code: true to run it"
        ) from None
    except OSError as error:
        raise ModelConfigError(f"cannot load {checkpoint!r}: {str(error).strip().splitlines()[0]}") from None


def _config_for_model_type(model_type: str) -> PreTrainedConfig:
    if model_type not in CONFIG_MAPPING:
        closest = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=5, cutoff=0.5)
        hint = f"closest: {', '.join(closest)}" if closest else "e.g. vit, resnet, convnext, paper_cnn"
        raise ModelConfigError(f"unknown model_type {model_type!r} ({hint})")
    return AutoConfig.for_model(model_type)


def _base_config(spec: ModelSpec, checkpoint: str | None) -> PreTrainedConfig:
    if checkpoint is not None:
        config = _load_config(spec, checkpoint)
        if spec.model_type is not None and spec.model_type != config.model_type:
            raise ModelConfigError(
                f"model_type={spec.model_type!r} contradicts the checkpoint {checkpoint!r}, "
                f"whose model_type is {config.model_type!r}"
            )
        return config
    if spec.timm_architecture is not None:
        if spec.model_type not in (None, TIMM_MODEL_TYPE):
            raise ModelConfigError(
                f"timm_architecture needs model_type {TIMM_MODEL_TYPE!r} (or none), got {spec.model_type!r}"
            )
        pretrained_cfg = _timm_pretrained_cfg(spec.timm_architecture)
        return TimmWrapperConfig(architecture=spec.timm_architecture, pretrained_cfg=pretrained_cfg)
    if spec.model_type == TIMM_MODEL_TYPE:
        raise ModelConfigError(f"model_type={TIMM_MODEL_TYPE!r} needs timm_architecture, e.g. 'densenet121.tv_in1k'")
    if spec.model_type is None:
        raise ModelConfigError(
            "give model_name_or_path (a checkpoint), model_type (e.g. 'vit', 'paper_cnn') or timm_architecture"
        )
    return _config_for_model_type(spec.model_type)


def _apply_overrides(config: PreTrainedConfig, overrides: Mapping[str, Any]) -> None:
    unknown = sorted(key for key in overrides if not hasattr(config, key))
    if unknown:
        raise ModelConfigError(
            f"config_overrides has keys that {type(config).__name__} does not define: "
            f"{', '.join(unknown)}; valid keys: {', '.join(sorted(config.to_dict()))}"
        )
    for key, value in overrides.items():
        setattr(config, key, value)


def is_timm_vit(architecture: str) -> bool:
    """A timm Vision Transformer (plain or hybrid): its position embedding is built for an `img_size`."""
    return timm.models.is_model_in_modules(timm.models.get_arch_name(architecture), TIMM_VIT_MODULES)


def _apply_image_size(config: PreTrainedConfig, image_size: int) -> None:
    """Record the input size where the model or its timm processor reads it (CNNs like ResNet do not)."""
    if isinstance(config, TimmWrapperConfig):
        channels = config.pretrained_cfg["input_size"][0]
        config.pretrained_cfg = {**config.pretrained_cfg, "input_size": (channels, image_size, image_size)}
        if is_timm_vit(config.architecture):  # timm sizes a ViT's position embedding from img_size, not the cfg
            config.model_args = {**(config.model_args or {}), "img_size": image_size}
    elif hasattr(config, "image_size"):
        config.image_size = image_size


def _architecture_config(spec: ModelSpec, checkpoint: str | None) -> PreTrainedConfig:
    """The checkpoint's config (or a fresh one) with the spec's overrides and image size."""
    config = _base_config(spec, checkpoint)
    _apply_overrides(config, spec.config_overrides or {})
    if spec.image_size is not None:
        _apply_image_size(config, spec.image_size)
    return config


def _check_only_head_mismatched(mismatched_keys: set, old_num_labels: int, num_labels: int, source: str) -> None:
    """ignore_mismatched_sizes must re-initialise the classifier only, never backbone weights."""
    backbone = sorted(
        key
        for key, old_shape, new_shape in mismatched_keys
        if not (old_shape[0] == old_num_labels and new_shape[0] == num_labels)
    )
    if backbone:
        raise ModelConfigError(
            f"the weights of {source!r} do not fit the requested config (image_size or config_overrides "
            f"change their shape): {', '.join(backbone)}; drop those options or use pretrained=False"
        )


def is_convolutional(model: nn.Module) -> bool:
    """True for CNNs (ResNet, ConvNeXt, DenseNet, the paper's CNN), False for ViTs (one patch-embedding conv)."""
    return sum(isinstance(module, nn.Conv2d) for module in model.modules()) > 1


def build_model(spec: ModelSpec, *, names: Sequence[str]) -> PreTrainedModel:
    """A multi-label classifier for `names`: the checkpoint's weights with a new head, or random weights.

    `spec.pretrained` loads the checkpoint's weights (for `timm_architecture`, its timm Hub copy); without a
    checkpoint (`model_type`), the weights are random whatever `pretrained` says. Convolutional models get
    `channels_last` weights (faster on GPU). Seed (`transformers.set_seed`) before calling: the Trainer seeds
    too late for a model built before it.
    """
    checkpoint = _checkpoint(spec)
    config = _architecture_config(spec, checkpoint)
    checkpoint_num_labels = config.num_labels
    config.id2label = id2label(names)
    config.label2id = label2id(names)
    config.problem_type = MULTI_LABEL
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation not in (None, "sdpa"):  # sdpa is transformers' default where supported
        kwargs["attn_implementation"] = spec.attn_implementation
    if checkpoint is not None and spec.pretrained:
        model, info = AutoModelForImageClassification.from_pretrained(
            checkpoint, config=config, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
        )
        _check_only_head_mismatched(info["mismatched_keys"], checkpoint_num_labels, len(names), checkpoint)
        if not info["mismatched_keys"]:
            logger.warning(
                "%s already has %d outputs: its classifier weights are kept as the head's initialisation",
                checkpoint,
                len(names),
            )
    else:
        model = AutoModelForImageClassification.from_config(config, **kwargs)
    if is_convolutional(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def _resize_processor(processor: BaseImageProcessor, image_size: int) -> None:
    size = processor.size
    if "height" in size:
        processor.size = {"height": image_size, "width": image_size}
    elif "shortest_edge" in size:
        processor.size = {"shortest_edge": image_size}
        if getattr(processor, "do_center_crop", False):
            processor.crop_size = {"height": image_size, "width": image_size}
    else:
        raise ModelConfigError(f"cannot set image_size on {type(processor).__name__} with size {size}")


def build_image_processor(spec: ModelSpec) -> BaseImageProcessor:
    """The checkpoint's image processor (resized to `spec.image_size` if given), else an ImageNet-normalised one.

    timm models build theirs from `config.pretrained_cfg` (saved inside config.json, where `image_size` goes
    too); models without a processor get a `ViTImageProcessor` at the image size of their config.
    """
    checkpoint = _checkpoint(spec)
    config = _architecture_config(spec, checkpoint)
    if isinstance(config, TimmWrapperConfig):
        return TimmWrapperImageProcessor(pretrained_cfg=config.pretrained_cfg, architecture=config.architecture)
    if checkpoint is not None:
        try:
            processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=spec.trust_remote_code)
        except OSError:
            logger.info("%s has no image processor; using ImageNet normalisation", checkpoint)
        else:
            if spec.image_size is not None:
                _resize_processor(processor, spec.image_size)
            return processor
    size = getattr(config, "image_size", None) or spec.image_size or DEFAULT_IMAGE_SIZE
    height, width = (size, size) if isinstance(size, int) else size
    return ViTImageProcessor(
        size={"height": height, "width": width}, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD
    )
