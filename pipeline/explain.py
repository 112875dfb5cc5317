"""Where the models look: Grad-CAM for one finding, for every model, and attention rollout for vision transformers.

Grad-CAM weighs a layer's activations by the finding's gradient, so each finding gets its own map: on the last
convolutional feature map of a CNN, and on the last block's patch tokens of a ViT (HF or timm), reshaped to the
patch grid. Attention rollout does not depend on the finding; it stays available as the model-wide view.

Maps are computed on the image exactly as the model's image processor prepares it (resize, crop, normalise),
and NIH boxes are carried through the same processor, so map, image and box line up whatever the processor does.
The report and the demo page (`chestxray demo`) draw the same maps.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from pipeline import paper_cnn  # noqa: F401  (registers the paper's CNN, so its run folders load without remote code)
from pipeline.errors import UserError
from pipeline.labels import FINDINGS, UnknownFindingError, normalize_finding

# BBox_List_2017.csv coordinates refer to the 1024 × 1024 images of the NIH release.
NIH_IMAGE_SIZE = 1024
BBOX_HEADER = ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
GRAD_CAM = "Grad-CAM"
ROLLOUT = "attention rollout"


class ExplainError(UserError, ValueError):
    """A run folder, image or box file that cannot be explained as asked."""


@dataclass(frozen=True)
class Box:
    finding: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class Explanation:
    """The processed image (H × W, 0–255), the map over it (H × W, 0–1) and boxes (x, y, w, h) on it."""

    image: np.ndarray
    heatmap: np.ndarray
    boxes: list[tuple[float, float, float, float]]
    finding: str
    probability: float
    method: str


def read_bbox_csv(path: str | Path, names: Sequence[str] = FINDINGS) -> dict[str, list[Box]]:
    """NIH `BBox_List_2017.csv` → image id → boxes (1024 px coordinates), `Infiltrate` read as `Infiltration`."""
    path = Path(path)
    boxes: dict[str, list[Box]] = {}
    with path.open(newline="") as handle:
        rows = csv.reader(handle)
        header = [field.strip() for field in next(rows, [])]
        if header[: len(BBOX_HEADER)] != BBOX_HEADER or any(header[len(BBOX_HEADER) :]):
            raise ExplainError(f"{path}: header {header} is not NIH's {','.join(BBOX_HEADER)} (+ empty fields)")
        for line, row in enumerate(rows, start=2):
            if not any(field.strip() for field in row):
                continue
            if len(row) < 6 or any(field.strip() for field in row[6:]):
                raise ExplainError(f"{path}, line {line}: expected image,finding,x,y,w,h; got {row}")
            try:
                x, y, w, h = (float(value) for value in row[2:6])
                box = Box(normalize_finding(row[1], names), x, y, w, h)
            except (ValueError, UnknownFindingError) as error:
                raise ExplainError(f"{path}, line {line}: {error}") from error
            boxes.setdefault(row[0].strip(), []).append(box)
    return boxes


def scale_box(box: Box, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box from NIH's 1024 px coordinates to an image of `image_size` (width, height)."""
    sx, sy = image_size[0] / NIH_IMAGE_SIZE, image_size[1] / NIH_IMAGE_SIZE
    return box.x * sx, box.y * sy, box.width * sx, box.height * sy


def load_model(run_dir: str | Path, trust_remote_code: bool = False) -> tuple[PreTrainedModel, object]:
    """The run's model (eval mode) and image processor.

    Code shipped in a run folder runs only with `trust_remote_code`; the paper's CNN needs none (it is registered
    with the Auto classes by this package), whatever its config's `auto_map` says.
    """
    if not (Path(run_dir) / "config.json").is_file():
        raise ExplainError(f"{run_dir}: no config.json, so no model to explain (or pass --explain-images 0)")
    try:
        model = AutoModelForImageClassification.from_pretrained(run_dir, trust_remote_code=trust_remote_code)
        processor = AutoImageProcessor.from_pretrained(run_dir, trust_remote_code=trust_remote_code)
    except ValueError as error:
        if trust_remote_code or "trust_remote_code" not in str(error):
            raise
        raise ExplainError(
            f"{run_dir}: the model needs the custom code in its folder; read it, then pass --trust-remote-code"
        ) from error
    return model.eval(), processor


def timm_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The attention modules of a timm ViT inside transformers' `TimmWrapper` (None for any other model)."""
    blocks = getattr(getattr(model, "timm_model", None), "blocks", None)
    if blocks is None or not all(hasattr(getattr(block, "attn", None), "attn_drop") for block in blocks):
        return None
    return [block.attn for block in blocks]


def uses_attention(model: PreTrainedModel) -> bool:
    """Whether the model is a transformer whose attention weights rollout can read."""
    return getattr(model.config, "num_attention_heads", None) is not None or timm_attention_modules(model) is not None


def attentions_and_grid(
    model: PreTrainedModel, pixel_values: torch.Tensor
) -> tuple[Sequence[torch.Tensor], tuple[int, int]]:
    """Per-layer attention weights (1, heads, tokens, tokens) and the patch grid (rows, columns).

    Neither SDPA nor timm's fused attention computes the weights, so for this one pass a transformers ViT runs
    its eager attention (`output_attentions`) and a timm ViT its unfused path, whose softmax output is read where
    it enters `attn_drop`; both are switched back after it, so scores elsewhere (the demo page) stay `predict`'s.
    The grid of a hybrid follows its ResNet stem's total stride (16), which timm's patch embedding reports.
    """
    modules = timm_attention_modules(model)
    if modules is None:
        implementation = model.config._attn_implementation
        try:
            model.set_attn_implementation("eager")
            with torch.no_grad():
                attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
        finally:
            model.set_attn_implementation(implementation)
        return attentions, patch_grid(model, pixel_values)
    captured: list[torch.Tensor] = []
    fused = [module.fused_attn for module in modules]
    handles = [module.attn_drop.register_forward_hook(lambda _m, _i, out: captured.append(out)) for module in modules]
    try:
        for module in modules:
            module.fused_attn = False
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for module, was_fused, handle in zip(modules, fused, handles, strict=True):
            module.fused_attn = was_fused
            handle.remove()
    return captured, patch_grid(model, pixel_values)


def patch_grid(model: PreTrainedModel, pixel_values: torch.Tensor) -> tuple[int, int]:
    """The (rows, columns) of a ViT's patch tokens: timm's patch embedding reports it (a hybrid's follows its
    ResNet stem's stride), an HF ViT's is the input size over the patch size."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        rows, columns = timm_model.patch_embed.grid_size
        return int(rows), int(columns)
    patch = model.config.patch_size
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def last_block(model: PreTrainedModel) -> torch.nn.Module:
    """The last transformer block of a ViT: timm's `blocks`, HF's `layers` (transformers ≥ 5.2x) or `encoder.layer`."""
    timm_model = getattr(model, "timm_model", None)
    base = model.base_model
    for blocks in (getattr(timm_model, "blocks", None), getattr(base, "layers", None), getattr(base, "encoder", None)):
        blocks = getattr(blocks, "layer", blocks)
        if isinstance(blocks, torch.nn.ModuleList | torch.nn.Sequential) and len(blocks):
            return blocks[-1]
    raise ExplainError(f"{type(model).__name__}: no transformer blocks found for Grad-CAM")


def preprocess(image: Image.Image, processor: object) -> torch.Tensor:
    """(1, 3, H, W) pixel values; grayscale images go to RGB first (processors normalise three channels)."""
    return processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]


def attention_rollout(attentions: Sequence[torch.Tensor], grid: tuple[int, int]) -> np.ndarray:
    """Abnar & Zuidema (2020): average heads, add the residual, renormalise, multiply through the layers.

    Returns how much the class token draws from each patch, as a `grid` (rows, columns) array. Patch tokens are
    the last rows × columns tokens (after CLS and any distillation or register tokens).
    """
    tokens = attentions[0].shape[-1]
    patches = grid[0] * grid[1]
    if patches >= tokens:
        raise ExplainError(f"{tokens} tokens cannot hold a class token and a {grid[0]}×{grid[1]} patch grid")
    identity = torch.eye(tokens)
    rollout = identity
    for layer in attentions:
        mixed = 0.5 * layer[0].float().cpu().mean(dim=0) + 0.5 * identity
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    return rollout[0, -patches:].reshape(grid).detach().numpy()


def last_feature_map_layer(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.nn.Module:
    """The module that last outputs a spatial feature map (N, C, H, W with H, W > 1): the last conv stage.

    Found by one forward pass with hooks, so it works for any convolutional architecture (HF, timm, custom).
    """
    found: list[torch.nn.Module] = []

    def record(module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
            found.append(module)

    handles = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise ExplainError(f"{type(model).__name__} has no convolutional feature map for Grad-CAM")
    return found[-1]


def _activation_and_gradient(
    model: PreTrainedModel, pixel_values: torch.Tensor, layer: torch.nn.Module, class_index: int, *, entering: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensor leaving `layer` (or, `entering`, its first tensor input) for the first image, and the gradient
    of logit `class_index` with respect to it.

    `autograd.grad` computes that one gradient only: the parameters' `.grad` are neither filled nor touched.
    """
    captured: list[torch.Tensor] = []

    def keep_input(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(next(x for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor)))

    if entering:
        handle = layer.register_forward_pre_hook(keep_input, with_kwargs=True)
    else:
        handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        with torch.enable_grad():
            logit = model(pixel_values=pixel_values).logits[0, class_index]
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(logit, captured[-1])
    return captured[-1][0].detach().float(), gradient[0].float()


def grad_cam(model: PreTrainedModel, pixel_values: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of one logit on the last feature map, at that map's resolution."""
    layer = last_feature_map_layer(model, pixel_values)
    activation, gradient = _activation_and_gradient(model, pixel_values, layer, class_index, entering=False)
    weights = gradient.mean(dim=(1, 2))
    return torch.relu(torch.einsum("c,chw->hw", weights, activation)).cpu().numpy()


def token_grad_cam(model: PreTrainedModel, pixel_values: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM on the tokens entering a ViT's last block, on the patch grid: the patch tokens (the last
    rows × columns, after the class token and any register tokens) play the feature map's pixels, the hidden size
    its channels. The tokens the last block puts out reach a class-token head only through the class token, so
    their patch tokens get no gradient; the tokens going in reach it through the last attention (as
    pytorch-grad-cam's usual `blocks[-1].norm1` target does)."""
    grid = patch_grid(model, pixel_values)
    block = last_block(model)
    activation, gradient = _activation_and_gradient(model, pixel_values, block, class_index, entering=True)
    patches = grid[0] * grid[1]
    if patches >= activation.shape[0]:
        raise ExplainError(f"{activation.shape[0]} tokens cannot hold a class token and a {grid[0]}×{grid[1]} grid")
    weights = gradient[-patches:].mean(dim=0)
    return torch.relu(activation[-patches:] @ weights).reshape(grid).cpu().numpy()


def _to_input_size(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling to the input's (H, W), scaled to 0–1 (all zeros stay zeros)."""
    tensor = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]
    upsampled = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0]
    upsampled = upsampled - upsampled.min()
    peak = upsampled.max()
    return (upsampled / peak if peak > 0 else upsampled).numpy()


def methods(model: PreTrainedModel) -> tuple[str, ...]:
    """The maps this model offers: Grad-CAM (per finding) always, attention rollout (model-wide) for ViTs."""
    return (GRAD_CAM, ROLLOUT) if uses_attention(model) else (GRAD_CAM,)


def heatmap(
    model: PreTrainedModel, pixel_values: torch.Tensor, class_index: int, method: str = GRAD_CAM
) -> tuple[np.ndarray, str]:
    """The map for one image at input resolution, 0–1, and the method's name.

    Grad-CAM (the default) depends on `class_index`; rollout, for ViTs only, does not.
    """
    size = tuple(pixel_values.shape[-2:])
    if method not in methods(model):
        raise ExplainError(f"{type(model).__name__} has no {method!r} map; it has {', '.join(methods(model))}")
    if method == ROLLOUT:
        attentions, grid = attentions_and_grid(model, pixel_values)
        if not attentions:
            raise ExplainError(f"{type(model).__name__} returned no attention weights")
        return _to_input_size(attention_rollout(attentions, grid), size), ROLLOUT
    cam = token_grad_cam if uses_attention(model) else grad_cam
    return _to_input_size(cam(model, pixel_values, class_index), size), GRAD_CAM


def box_after_preprocessing(
    box: tuple[float, float, float, float], image_size: tuple[int, int], processor: object
) -> tuple[float, float, float, float] | None:
    """Where a box (x, y, w, h on an image of `image_size`) lands after the processor; None if cropped away.

    The box is drawn as a mask and sent through the processor itself, so any resize/crop is followed exactly.
    """
    x, y, w, h = box
    mask = Image.new("L", image_size, 0)
    ImageDraw.Draw(mask).rectangle([x, y, x + w - 1, y + h - 1], fill=255)
    values = preprocess(mask, processor)[0, 0].numpy()
    if values.max() == values.min():
        return None
    rows, cols = np.nonzero(values > (values.max() + values.min()) / 2)
    return float(cols.min()), float(rows.min()), float(cols.max() - cols.min() + 1), float(rows.max() - rows.min() + 1)


def _display_image(pixel_values: torch.Tensor) -> np.ndarray:
    """The first channel of the processed image, stretched back to 0–255 for display."""
    channel = pixel_values[0, 0].float().cpu().numpy()
    span = channel.max() - channel.min()
    return ((channel - channel.min()) / (span if span > 0 else 1.0) * 255).astype(np.uint8)


def explain_image(
    model: PreTrainedModel,
    processor: object,
    image: Image.Image,
    finding: str | None = None,
    boxes: Sequence[Box] = (),
    method: str = GRAD_CAM,
) -> Explanation:
    """Explain one stored image for `finding` (default: the model's most probable finding) with `method`.

    `boxes` are NIH boxes in 1024 px coordinates; those of `finding` are drawn.
    """
    pixel_values = preprocess(image, processor).to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        probs = torch.sigmoid(model(pixel_values=pixel_values).logits[0].float()).cpu().numpy()
    label2id = {name: int(index) for name, index in model.config.label2id.items()}
    if finding is None:
        finding = model.config.id2label[int(np.argmax(probs))]
    elif finding not in label2id:
        raise ExplainError(f"the model has no output for {finding!r}; its labels: {', '.join(label2id)}")
    class_index = label2id[finding]
    mapped = [
        box_after_preprocessing(scale_box(b, image.size), image.size, processor) for b in boxes if b.finding == finding
    ]
    heat, method = heatmap(model, pixel_values, class_index, method)
    return Explanation(
        _display_image(pixel_values),
        heat,
        [b for b in mapped if b is not None],
        finding,
        float(probs[class_index]),
        method,
    )
