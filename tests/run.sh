#!/usr/bin/env bash
# Set up `.venv` (once) and run the linter and the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../recipes/setup.sh"
ruff check .
python -m pytest "$@"
