import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    ConvNextImageProcessor,
    ResNetConfig,
    ViTConfig,
    ViTImageProcessor,
)
from transformers import pipeline as hf_pipeline

from pipeline import explain
from pipeline.labels import FINDINGS
from pipeline.models import ModelConfigError, build_image_processor, build_model, is_convolutional
from pipeline.paper_cnn import PaperCNNConfig, PaperCNNForImageClassification

NAMES = list(FINDINGS)
TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}
IMAGENET_LIKE = {"id2label": {0: "cat", 1: "dog", 2: "car"}, "label2id": {"cat": 0, "dog": 1, "car": 2}}


def spec(model_name_or_path=None, **fields) -> SimpleNamespace:
    """A `ModelSpec` with `ModelArguments`' defaults."""
    defaults = {
        "pretrained": True,
        "model_type": None,
        "config_overrides": None,
        "image_size": None,
        "attn_implementation": "sdpa",
        "timm_architecture": None,
        "trust_remote_code": False,
    }
    return SimpleNamespace(model_name_or_path=model_name_or_path and str(model_name_or_path), **{**defaults, **fields})


def _save_checkpoint(folder: Path, config, processor) -> Path:
    """A local stand-in for a Hub checkpoint: a 3-class model with its image processor."""
    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory) -> Path:
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return _save_checkpoint(tmp_path_factory.mktemp("vit"), ViTConfig(**TINY_VIT, **IMAGENET_LIKE), processor)


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0)
    return _save_checkpoint(tmp_path_factory.mktemp("resnet"), ResNetConfig(**TINY_RESNET, **IMAGENET_LIKE), processor)


def _saved_state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def _assert_multi_label_config(config) -> None:
    assert config.num_labels == 14
    assert [config.id2label[i] for i in range(14)] == NAMES
    assert config.label2id["Pleural_Thickening"] == 11
    assert config.problem_type == "multi_label_classification"


@pytest.mark.parametrize("checkpoint", ["vit_checkpoint", "resnet_checkpoint"])
def test_pretrained_keeps_backbone_and_gets_a_new_head(checkpoint, request):
    folder = request.getfixturevalue(checkpoint)
    saved = _saved_state(folder)
    model = build_model(spec(folder, pretrained=True), names=NAMES)
    _assert_multi_label_config(model.config)
    state = model.state_dict()
    head = {key for key in state if key.startswith("classifier.")}
    assert head and all(state[key].shape[0] == 14 for key in head)
    for key, value in state.items():
        if key not in head:
            assert torch.equal(value, saved[key]), key
    assert model(torch.rand(2, 3, 32, 32)).logits.shape == (2, 14)


def test_scratch_uses_the_checkpoint_config_with_random_weights(vit_checkpoint):
    saved = _saved_state(vit_checkpoint)
    model = build_model(spec(vit_checkpoint, pretrained=False), names=NAMES)
    _assert_multi_label_config(model.config)
    assert model.config.hidden_size == 32
    weights = {key: value for key, value in model.state_dict().items() if value.ndim >= 2}
    assert len(weights) > 5
    assert not any(torch.equal(value, saved[key]) for key, value in weights.items())


def test_pretrained_with_a_shape_changing_option_is_refused(vit_checkpoint):
    with pytest.raises(ValueError, match="position_embeddings"):
        build_model(spec(vit_checkpoint, image_size=64), names=NAMES)


def test_fresh_vit_from_model_type_and_overrides_uses_sdpa():
    model = build_model(spec(model_type="vit", pretrained=False, config_overrides=TINY_VIT), names=NAMES)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert model.config._attn_implementation == "sdpa"
    assert not is_convolutional(model)
    assert model.vit.embeddings.patch_embeddings.projection.weight.is_contiguous()


def test_bad_arguments_say_what_is_wrong(vit_checkpoint):
    with pytest.raises(ValueError, match="hiden_size"):
        build_model(spec(model_type="vit", pretrained=False, config_overrides={"hiden_size": 3}), names=NAMES)
    with pytest.raises(ValueError, match="contradicts"):
        build_model(spec(vit_checkpoint, model_type="resnet"), names=NAMES)
    with pytest.raises(ValueError, match="unknown timm architecture"):
        build_model(spec(timm_architecture="not_a_model", pretrained=False), names=NAMES)


def test_offline_an_uncached_checkpoint_fails_at_once_naming_it(monkeypatch, tmp_path):
    def must_not_try(*args, **kwargs):
        raise AssertionError("tried to reach the Hub")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(AutoConfig, "from_pretrained", must_not_try)
    expected = r"'org/some-vit' is not in the local Hub cache .*hf download org/some-vit.* local folder"
    with pytest.raises(ModelConfigError, match=expected):
        build_image_processor(spec("org/some-vit"))


def test_an_unknown_model_type_shows_the_closest_few():
    with pytest.raises(ModelConfigError) as error:
        build_model(spec(model_type="vitt", pretrained=False), names=NAMES)
    message = str(error.value)
    assert message.startswith("unknown model_type 'vitt' (closest: vit, ") and len(message) < 120


def test_a_custom_code_checkpoint_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "my_custom", "auto_map": {"AutoConfig": "custom.MyConfig"}})
    )
    (folder / "custom.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ModelConfigError, match=r"needs its own code to load .* trust_remote_code: true") as error:
        build_model(spec(folder), names=NAMES)
    assert "\n" not in str(error.value)


def test_processor_from_checkpoint_is_resized_and_saves_with_the_model(resnet_checkpoint, tmp_path):
    model = build_model(spec(resnet_checkpoint, image_size=48), names=NAMES)
    assert is_convolutional(model)
    assert model.resnet.embedder.embedder.convolution.weight.is_contiguous(memory_format=torch.channels_last)
    processor = build_image_processor(spec(resnet_checkpoint, image_size=48))
    assert isinstance(processor, ConvNextImageProcessor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)).convert("RGB")
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 48, 48)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    classifier = hf_pipeline("image-classification", model=str(tmp_path), device="cpu")
    scores = classifier(image.convert("L"), top_k=14)
    assert sorted(score["label"] for score in scores) == sorted(NAMES)
    assert sum(score["score"] for score in scores) > 1.5  # sigmoid per finding, not a softmax


def test_scratch_processor_matches_the_model_image_size():
    processor = build_image_processor(spec(model_type="vit", config_overrides=TINY_VIT))
    assert isinstance(processor, ViTImageProcessor)
    assert processor.size == {"height": 32, "width": 32}
    assert processor.image_mean == pytest.approx([0.485, 0.456, 0.406])


def test_paper_cnn_trains_saves_and_reloads(tmp_path):
    paper_cnn = spec(model_type="paper_cnn", image_size=28)  # pretrained=True: no checkpoint, random weights
    model = build_model(paper_cnn, names=NAMES)
    assert isinstance(model, PaperCNNForImageClassification) and is_convolutional(model)
    _assert_multi_label_config(model.config)
    pixels = torch.rand(4, 3, 28, 28)
    labels = (torch.rand(4, 14) < 0.3).float()
    output = model(pixel_values=pixels, labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, labels)
    assert output.logits.shape == (4, 14) and torch.allclose(output.loss, expected)
    output.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    model.save_pretrained(tmp_path)
    build_image_processor(paper_cnn).save_pretrained(tmp_path)
    assert (tmp_path / "paper_cnn.py").is_file()
    assert AutoConfig.from_pretrained(tmp_path).auto_map["AutoModelForImageClassification"] == (
        "paper_cnn.PaperCNNForImageClassification"
    )
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded, PaperCNNForImageClassification)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in reloaded.state_dict().items())
    # channels_last weights (in `model`) may pick another convolution algorithm: equal up to rounding.
    assert torch.allclose(reloaded(pixels).logits, model(pixels).logits, atol=1e-6)
    assert AutoImageProcessor.from_pretrained(tmp_path).size == {"height": 28, "width": 28}

    script = textwrap.dedent(f"""
        import sys
        sys.modules["pipeline"] = None  # any import of the project now fails
        import torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        torch.save(model(torch.load({str(tmp_path / "x.pt")!r})).logits, {str(tmp_path / "y.pt")!r})
    """)
    torch.save(pixels, tmp_path / "x.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert torch.allclose(torch.load(tmp_path / "y.pt"), reloaded(pixels).logits, atol=1e-6)


def test_paper_cnn_rejects_an_image_too_small():
    with pytest.raises(ValueError, match="too small"):
        PaperCNNForImageClassification(PaperCNNConfig(image_size=8))


def test_pretrained_timm_architecture_starts_from_its_hub_checkpoint(monkeypatch):
    requested = []

    def offline_from_pretrained(name, **kwargs):
        requested.append(name)
        raise OSError("offline")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline_from_pretrained)
    with pytest.raises(ModelConfigError, match=r"'timm/densenet121\.tv_in1k': offline"):
        build_model(spec(timm_architecture="densenet121.tv_in1k"), names=NAMES)
    assert requested == ["timm/densenet121.tv_in1k"]


def test_timm_densenet_from_scratch_saves_and_reloads(tmp_path):
    tiny = {"model_args": {"growth_rate": 4, "block_config": (1, 1, 1, 1)}}
    densenet = spec(timm_architecture="densenet121", pretrained=False, image_size=32, config_overrides=tiny)
    model = build_model(densenet, names=NAMES)
    _assert_multi_label_config(model.config)
    assert is_convolutional(model)
    processor = build_image_processor(densenet)
    image = Image.new("RGB", (40, 50), color=(90, 90, 90))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    _assert_multi_label_config(reloaded.config)
    assert torch.allclose(reloaded(pixels).logits, model(pixels).logits)
    assert torch.equal(AutoImageProcessor.from_pretrained(tmp_path)(image)["pixel_values"], pixels)


def test_the_training_arguments_are_a_model_spec():
    from pipeline.arguments import ModelArguments

    processor = build_image_processor(ModelArguments(model_type="vit", config_overrides=json.dumps(TINY_VIT)))
    assert processor.size == {"height": 32, "width": 32}


HYBRID = "vit_base_r50_s16_224.orig_in21k"
SAMPLE_PNG = Path(__file__).parents[1] / "pipeline" / "assets" / "nih_sample" / "images" / "00004296_000.png"
TINY_HYBRID = {"model_args": {"depth": 2, "embed_dim": 96, "num_heads": 2}}  # on the full ResNet-50 v2 stem


@pytest.mark.slow
def test_vit_resnet_hybrid_at_64_px_trains_saves_reloads_and_shows_real_attention(tmp_path):
    """The paper's ViT-ResNet/16: image_size reaches timm (position embedding for a 4×4 grid at 64 px), the run
    folder loads as plain transformers and in the 🤗 pipeline, and rollout reads timm's own attention weights."""
    hybrid = spec(timm_architecture=HYBRID, pretrained=False, image_size=64, config_overrides=TINY_HYBRID)
    model = build_model(hybrid, names=NAMES)
    _assert_multi_label_config(model.config)
    processor = build_image_processor(hybrid)
    image = Image.open(SAMPLE_PNG)
    pixels = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    loss = model(pixel_values=pixels, labels=torch.ones(1, len(NAMES))).loss
    loss.backward()  # trains: every block gets a gradient
    assert all(p.grad is not None for p in model.timm_model.blocks.parameters())
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        assert torch.allclose(reloaded(pixel_values=pixels).logits, logits, atol=1e-6)
    scores = hf_pipeline("image-classification", model=str(tmp_path), top_k=len(NAMES))(image)
    expected = dict(zip(NAMES, torch.sigmoid(logits[0]).tolist(), strict=True))
    assert {s["label"]: s["score"] for s in scores} == pytest.approx(expected, abs=1e-5)

    attentions, grid = explain.attentions_and_grid(reloaded, pixels)
    assert grid == (4, 4) and len(attentions) == 2
    assert all(a.shape == (1, 2, 17, 17) for a in attentions)  # class token + 16 patches, per head
    assert all(torch.allclose(a.sum(dim=-1), torch.ones(1, 2, 17)) for a in attentions)  # softmax rows
    assert all(block.attn.fused_attn for block in reloaded.timm_model.blocks)  # switched back on
    heatmap, method = explain.heatmap(reloaded, pixels, class_index=0, method=explain.ROLLOUT)
    assert method == "attention rollout" and heatmap.shape == (64, 64) and heatmap.max() == pytest.approx(1.0)
    assert explain.token_grad_cam(reloaded, pixels, class_index=0).shape == (4, 4)  # the hybrid's stem stride
