"""Train every model of the comparison study, then write the report.

    accelerate launch recipes/study.py --config recipes/study.yaml
    python recipes/study.py --config recipes/study_tiny.yaml
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
