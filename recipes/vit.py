"""Train Vision Transformers (ViT-B/16, ViT-B/32, the paper's small ViTs) on ChestX-ray14.

accelerate launch recipes/vit.py --config recipes/configs/<recipe>.yaml [--key value ...]
python recipes/vit.py --config recipes/configs/<recipe>.yaml [--key value ...]
"""

import sys

from pipeline.cli import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe())
