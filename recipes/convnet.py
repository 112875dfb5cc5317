"""Train convolutional networks (the paper's CNN, ConvNeXt-T, DenseNet-121) on ChestX-ray14.

accelerate launch recipes/convnet.py --config recipes/configs/<recipe>.yaml [--key value ...]
python recipes/convnet.py --config recipes/configs/<recipe>.yaml [--key value ...]
"""

import sys

from pipeline.cli import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe())
