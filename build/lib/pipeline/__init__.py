"""Fine-tune and publish multi-label chest X-ray classifiers on NIH ChestX-ray14."""

from pipeline.labels import FINDINGS

__all__ = ["FINDINGS"]
__version__ = "0.1.0"
