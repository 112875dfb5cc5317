"""Train ResNets (ResNet-50 pretrained, the paper's ResNet-34 from scratch) on ChestX-ray14.

accelerate launch recipes/resnet.py --config recipes/configs/<recipe>.yaml [--key value ...]
python recipes/resnet.py --config recipes/configs/<recipe>.yaml [--key value ...]
"""

import sys

from pipeline.cli import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe())
