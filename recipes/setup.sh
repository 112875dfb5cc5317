# Create `.venv` once, install the project into it, reuse it after; re-installs only when pyproject.toml
# changed since the last install. Run it (`bash recipes/setup.sh`) or source it from a script, which then
# runs from the repo root with `.venv/bin` first on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
STAMP=.venv/.chestxray-installed
if [ ! -f "$STAMP" ] || ! cmp -s pyproject.toml "$STAMP"; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # This pin is what CPU-only development machines here install; any torch in pyproject's range works.
    .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" \
        || .venv/bin/python -m pip install --quiet torch torchvision
    # The demo extra (Gradio, Playwright) is for `chestxray demo` and its browser tests; it holds Pillow at 12.x.
    .venv/bin/python -m pip install --quiet -e ".[dev,demo,tracking]"
    cp pyproject.toml "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
