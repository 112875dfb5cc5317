import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from report_data import save_model, tiny_resnet
from run_folder_factory import SAMPLE_ROOT, tiny_model
from transformers import ViTImageProcessor

from pipeline import explain
from pipeline.labels import FINDINGS
from pipeline.paper_cnn import PaperCNNForImageClassification


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("vit"), *tiny_model("vit", seed=0))


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("resnet"), *tiny_resnet(seed=0))


def _xray(size: int = 64) -> Image.Image:
    """A grayscale image with structure (a bright disc off centre) so maps have something to differ over."""
    y, x = np.mgrid[:size, :size]
    disc = ((x - size * 0.3) ** 2 + (y - size * 0.6) ** 2 < (size * 0.2) ** 2) * 200
    noise = np.random.default_rng(0).integers(0, 40, (size, size))
    return Image.fromarray((disc + noise).astype(np.uint8), mode="L")


def test_rollout_of_a_real_vit_has_the_patch_grid_shape_and_varies(vit_run):
    model, processor = explain.load_model(vit_run)
    assert explain.uses_attention(model)
    pixel_values = explain.preprocess(_xray(), processor)
    implementation = model.config._attn_implementation
    attentions, patches = explain.attentions_and_grid(model, pixel_values)
    assert len(attentions) == model.config.num_hidden_layers and patches == (4, 4)  # 32 px / 8 px patches
    # eager attention for the weights during that pass only: the scores elsewhere stay those of predict's backend
    assert model.config._attn_implementation == implementation
    grid = explain.attention_rollout(attentions, patches)
    assert grid.shape == (4, 4) and grid.std() > 0
    heat, method = explain.heatmap(model, pixel_values, class_index=0, method=explain.ROLLOUT)
    assert method == "attention rollout"
    assert heat.shape == (32, 32) and heat.min() == 0 and heat.max() == pytest.approx(1) and heat.std() > 0
    # Rollout does not depend on the finding.
    assert np.array_equal(heat, explain.heatmap(model, pixel_values, class_index=5, method=explain.ROLLOUT)[0])


def _assert_token_grad_cam_is_finding_specific(model, pixel_values, grid):
    """Grad-CAM on the patch tokens entering the last block equals a hand computation from those tokens and the
    logit's gradient (by `torch.autograd.grad`), on the patch grid, and differs per finding."""
    block = explain.last_block(model)
    outputs = []
    handle = block.register_forward_pre_hook(lambda _m, args: outputs.append(args[0]))
    logits = model(pixel_values=pixel_values).logits
    handle.remove()
    patches = grid[0] * grid[1]
    cams = []
    for k in range(3):
        (gradient,) = torch.autograd.grad(logits[0, k], outputs[0], retain_graph=True)
        expected = torch.relu(outputs[0][0, -patches:] @ gradient[0, -patches:].mean(dim=0)).reshape(grid)
        cam = explain.token_grad_cam(model, pixel_values, class_index=k)
        assert cam.shape == grid
        np.testing.assert_allclose(cam, expected.detach().numpy(), rtol=1e-4, atol=1e-6)
        cams.append(cam)
    assert any(cam.std() > 0 for cam in cams) and not np.allclose(cams[0], cams[1])
    assert all(p.grad is None for p in model.parameters())  # only the activation's gradient was computed
    heat, method = explain.heatmap(model, pixel_values, class_index=1)
    assert method == "Grad-CAM" and heat.shape == tuple(pixel_values.shape[-2:])
    assert explain.methods(model) == ("Grad-CAM", "attention rollout")


def test_grad_cam_of_an_hf_vit_is_per_finding_on_the_patch_grid(vit_run):
    model, processor = explain.load_model(vit_run)
    _assert_token_grad_cam_is_finding_specific(model, explain.preprocess(_xray(), processor), (4, 4))


def test_grad_cam_of_a_timm_vit_is_per_finding_on_the_patch_grid():
    from pipeline.models import build_model

    vit = SimpleNamespace(
        model_name_or_path=None,
        pretrained=False,
        model_type=None,
        config_overrides={"model_args": {"depth": 2, "embed_dim": 32, "num_heads": 2}},
        image_size=32,
        attn_implementation="sdpa",
        timm_architecture="vit_tiny_patch16_224",
        trust_remote_code=False,
    )
    torch.manual_seed(0)
    model = build_model(vit, names=list(FINDINGS)).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    _assert_token_grad_cam_is_finding_specific(model, pixel_values, (2, 2))


def test_rollout_rows_stay_distributions():
    attention = torch.softmax(torch.randn(1, 2, 5, 5), dim=-1)
    rolled = explain.attention_rollout([attention, attention], (2, 2))
    # The class token's row of a product of row-stochastic matrices: its patch entries sum to at most 1.
    assert rolled.shape == (2, 2) and 0 < rolled.sum() <= 1
    with pytest.raises(explain.ExplainError, match="patch grid"):
        explain.attention_rollout([attention], (3, 3))


def test_grad_cam_on_a_real_resnet_uses_the_last_stage_and_varies(resnet_run):
    model, processor = explain.load_model(resnet_run)
    assert not explain.uses_attention(model)
    pixel_values = explain.preprocess(_xray(), processor)
    assert explain.last_feature_map_layer(model, pixel_values) is model.resnet.encoder.stages[-1]
    cams = [explain.grad_cam(model, pixel_values, class_index=k) for k in range(3)]
    assert all(cam.shape == (4, 4) for cam in cams)  # 32 px input, stride 8 after two stages
    assert any(cam.std() > 0 for cam in cams)
    assert not np.allclose(cams[0], cams[1])  # class-specific
    heat, method = explain.heatmap(model, pixel_values, class_index=0)
    assert method == "Grad-CAM" and heat.shape == (32, 32)
    assert explain.methods(model) == ("Grad-CAM",)
    with pytest.raises(explain.ExplainError, match="no 'attention rollout' map"):
        explain.heatmap(model, pixel_values, class_index=0, method=explain.ROLLOUT)


def test_grad_cam_on_the_paper_cnn_loaded_without_remote_code(tmp_path):
    run = save_model(tmp_path, *tiny_model("paper_cnn", seed=0))
    assert "auto_map" in json.loads((run / "config.json").read_text())
    model, processor = explain.load_model(run)
    assert type(model) is PaperCNNForImageClassification  # this package's class, not the folder's copy
    pixel_values = explain.preprocess(_xray(), processor)
    assert isinstance(explain.last_feature_map_layer(model, pixel_values), torch.nn.MaxPool2d)
    heat, method = explain.heatmap(model, pixel_values, class_index=2)
    assert method == "Grad-CAM" and heat.shape == (32, 32)


class _Flat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 2)

    def forward(self, pixel_values):
        return self.linear(pixel_values.flatten(1))


def test_grad_cam_needs_a_feature_map():
    with pytest.raises(explain.ExplainError, match="no convolutional feature map"):
        explain.last_feature_map_layer(_Flat(), torch.zeros(1, 3, 2, 2))


def test_box_follows_resize():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    box = explain.box_after_preprocessing((16, 8, 32, 16), (64, 64), processor)
    assert box == pytest.approx((8, 4, 16, 8), abs=1)


def test_box_follows_resize_and_centre_crop():
    _, processor = tiny_resnet()  # shortest edge 32 / crop_pct 0.875: resize to 36, crop the central 32
    box = explain.box_after_preprocessing((16, 16, 32, 32), (64, 64), processor)
    assert box == pytest.approx((7, 7, 18, 18), abs=1)
    assert explain.box_after_preprocessing((0, 0, 2, 2), (64, 64), processor) is None  # cropped away


def test_read_bbox_csv_on_the_shipped_nih_file():
    boxes = explain.read_bbox_csv(SAMPLE_ROOT / "BBox_List_2017.csv")
    first = boxes["00004296_000.png"][0]
    assert first.finding == "Atelectasis" and first.x == pytest.approx(731.428571428571)
    assert all(box.finding != "Infiltrate" for image_boxes in boxes.values() for box in image_boxes)
    assert explain.scale_box(first, (256, 256)) == pytest.approx((182.857, 188.275, 29.799, 23.297), abs=1e-3)


def test_read_bbox_csv_names_the_bad_line(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Infiltrate,1,2,3,4\nb.png,Flu,1,2,3,4\n")
    with pytest.raises(explain.ExplainError, match=r"line 3: unknown finding 'Flu'"):
        explain.read_bbox_csv(path)
    path.write_text("image,label\n")
    with pytest.raises(explain.ExplainError, match="header"):
        explain.read_bbox_csv(path)


def test_explain_image_draws_the_boxes_of_its_finding(vit_run):
    model, processor = explain.load_model(vit_run)
    boxes = [explain.Box("Effusion", 512, 512, 256, 256), explain.Box("Mass", 0, 0, 100, 100)]
    result = explain.explain_image(model, processor, _xray(), "Effusion", boxes)
    assert result.image.shape == result.heatmap.shape == (32, 32)
    assert result.finding == "Effusion" and 0 < result.probability < 1
    assert result.boxes == [pytest.approx((16, 16, 8, 8), abs=1)]
    top = explain.explain_image(model, processor, _xray())
    assert top.finding in model.config.label2id and top.boxes == []
    with pytest.raises(explain.ExplainError, match="no output for 'Flu'"):
        explain.explain_image(model, processor, _xray(), "Flu")


def test_load_model_needs_a_config(tmp_path):
    with pytest.raises(explain.ExplainError, match=r"no config\.json"):
        explain.load_model(tmp_path)


def test_custom_code_in_a_run_folder_only_runs_when_trusted(tmp_path):
    """A config whose auto_map points at code in the folder: loading refuses, and the code never runs."""
    run = save_model(tmp_path / "run", *tiny_model("vit", seed=0))
    config = json.loads((run / "config.json").read_text())
    config.update(
        model_type="mystery_net",
        auto_map={"AutoConfig": "mystery.MysteryConfig", "AutoModelForImageClassification": "mystery.MysteryModel"},
    )
    (run / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code_ran"
    (run / "mystery.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(explain.ExplainError, match="--trust-remote-code"):
        explain.load_model(run)
    assert not marker.exists()
