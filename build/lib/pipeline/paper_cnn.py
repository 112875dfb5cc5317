"""The small CNN of arXiv 2406.00237 as a transformers model (`model_type="paper_cnn"`).

conv(32, 3×3) → ReLU → max-pool 2 → conv(64, 3×3) → ReLU → max-pool 2 → flatten → dense 512 → ReLU → logits.
Convolutions use "valid" padding and weights use Glorot-uniform initialisation, as Keras (the paper's library)
does by default. This file imports only torch and transformers: `save_pretrained` copies it next to the
weights (with an `auto_map` in config.json), so a run folder loads anywhere with
`AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput


class PaperCNNConfig(PreTrainedConfig):
    """Sizes of the paper's CNN; `image_size` fixes the input of the dense layer."""

    model_type = "paper_cnn"

    def __init__(
        self,
        image_size: int = 224,
        num_channels: int = 3,
        conv_channels: list[int] | tuple[int, ...] = (32, 64),
        kernel_size: int = 3,
        pool_size: int = 2,
        hidden_size: int = 512,
        **kwargs,
    ):
        self.image_size = image_size
        self.num_channels = num_channels
        self.conv_channels = list(conv_channels)
        self.kernel_size = kernel_size
        self.pool_size = pool_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)

    def feature_map_size(self) -> int:
        """Side of the last feature map (valid convolutions, floor pooling); raises if the image is too small."""
        side = self.image_size
        for _ in self.conv_channels:
            side = (side - self.kernel_size + 1) // self.pool_size
            if side < 1:
                raise ValueError(
                    f"image_size={self.image_size} is too small for {len(self.conv_channels)} blocks of "
                    f"{self.kernel_size}×{self.kernel_size} convolution + {self.pool_size}× pooling"
                )
        return side


class PaperCNNForImageClassification(PreTrainedModel):
    config_class = PaperCNNConfig
    main_input_name = "pixel_values"
    base_model_prefix = "paper_cnn"

    def __init__(self, config: PaperCNNConfig):
        super().__init__(config)
        layers: list[nn.Module] = []
        in_channels = config.num_channels
        for out_channels in config.conv_channels:
            conv = nn.Conv2d(in_channels, out_channels, config.kernel_size)
            layers += [conv, nn.ReLU(), nn.MaxPool2d(config.pool_size)]
            in_channels = out_channels
        flat = in_channels * config.feature_map_size() ** 2
        layers += [nn.Flatten(), nn.Linear(flat, config.hidden_size), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        """Logits for (B, C, H, W) images; with `labels`, the loss for `config.problem_type` (BCE for multi-label)."""
        logits = self.classifier(self.features(pixel_values))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(PaperCNNConfig.model_type, PaperCNNConfig, exist_ok=True)
AutoModelForImageClassification.register(PaperCNNConfig, PaperCNNForImageClassification, exist_ok=True)
PaperCNNConfig.register_for_auto_class()
PaperCNNForImageClassification.register_for_auto_class("AutoModelForImageClassification")
