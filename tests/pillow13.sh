#!/usr/bin/env bash
# The image tests on Pillow 13, the Pillow of a core install (`pip install -e .`). `.venv` carries the demo extra,
# whose Gradio holds Pillow at 12.x, so the suite runs on 12.x; this runs the image tests again in
# `.venv-pillow13`, a venv with only Pillow 13 of its own that reaches everything else (torch, transformers,
# pytest, this project) through .venv's site-packages. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OVERLAY=.venv-pillow13
if [ ! -x "$OVERLAY/bin/python" ]; then
    .venv/bin/python -m venv "$OVERLAY"
    "$OVERLAY/bin/python" -m pip install --quiet "pillow>=13,<14"
    base=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    own=$("$OVERLAY/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$base')" > "$own/chestxray-base-venv.pth"
fi
"$OVERLAY/bin/python" -c 'import sys, PIL; sys.exit(None if PIL.__version__.startswith("13.") else f"Pillow {PIL.__version__}")'
"$OVERLAY/bin/python" -m pytest tests/test_images.py tests/test_pixels.py tests/test_convert.py \
    -k "not test_convert or resized_from_1024 or converts_all_modes or aspect_ratio or bad_image" "$@"
