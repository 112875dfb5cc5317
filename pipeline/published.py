"""Published results on NIH ChestX-ray14 that reports and model cards set beside this project's numbers.

Each number is written once here, with its source and what it measures. The field's mean per-finding AUROCs
(`REFERENCE_RESULTS`) and the reproduced paper's own table (`PAPER_RESULTS`, arXiv:2406.00237), whose metrics
are not the field's: see `PAPER_CAVEATS`.
"""

from __future__ import annotations

from dataclasses import dataclass

OFFICIAL_TEST_IMAGES = 25_596  # NIH's test_list.txt


@dataclass(frozen=True)
class ReferenceResult:
    """A published mean AUROC on NIH ChestX-ray14, the test split it was measured on, and where it comes from."""

    model: str
    mean_auroc: float
    source: str
    test_split: str = "official test list"


_XIAO_2023 = (
    "Xiao et al., *Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification*, WACV 2023, "
    "[arXiv:2210.12843](https://arxiv.org/abs/2210.12843)"
)
REFERENCE_RESULTS = (
    ReferenceResult(
        "CheXNet (DenseNet-121, ImageNet pre-trained)",
        0.841,
        "Rajpurkar et al., *CheXNet*, 2017, [arXiv:1711.05225](https://arxiv.org/abs/1711.05225)",
        "its own patient-wise random split, **not** the official test list",
    ),
    ReferenceResult("DenseNet-121, ImageNet pre-trained", 0.822, _XIAO_2023),
    ReferenceResult("ViT-S/16, ImageNet pre-trained", 0.796, _XIAO_2023),
    ReferenceResult("ViT-B/16, MAE pre-trained on chest X-rays", 0.830, _XIAO_2023),
)


@dataclass(frozen=True)
class PaperResult:
    """One row of the results table of arXiv:2406.00237, and the recipe here that reproduces its model."""

    model: str
    description: str
    init: str
    accuracy: float  # element-wise binary accuracy over all 14 labels, as a fraction
    pooled_auc: float  # Keras' AUC() with multi_label=False: all (image, finding) pairs in one ROC curve
    recipe: str


PAPER = (
    "Jain et al., *A Comparative Study of CNN, ResNet, and Vision Transformers for Multi-Classification of Chest "
    "Diseases*, 2024, [arXiv:2406.00237](https://arxiv.org/abs/2406.00237)"
)
PAPER_RESULTS = (
    PaperResult("CNN", "2 conv + pool blocks (32, 64 filters), dense 512", "random", 0.91, 0.82, "cnn_paper"),
    PaperResult("ResNet", "ResNet-34", "random", 0.93, 0.86, "resnet34_scratch"),
    PaperResult("ViT-v1/32", "small ViT, patch 32, AdamW", "random", 0.9263, 0.86, "vit_v1_32_scratch"),
    PaperResult("ViT-v2/32", "the same ViT, SGD with Nesterov momentum", "random", 0.9283, 0.84, "vit_v2_32_scratch"),
    PaperResult("ViT-ResNet/16", "ResNet-50 stem + ViT-B/16", "ImageNet-21k", 0.939, 0.85, "vit_r50_b16_pretrained"),
)
