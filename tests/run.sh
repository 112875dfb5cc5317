#!/usr/bin/env bash
# Set up `.venv` (once) and run the linter and the test suite (on the demo extra's Pillow 12), then the image
# tests on a core install's Pillow 13 (tests/pillow13.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../recipes/setup.sh"
ruff check .
python -m pytest "$@"
bash tests/pillow13.sh -q
