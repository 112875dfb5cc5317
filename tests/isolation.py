"""Run Python in a subprocess that cannot import this project: proves that what we publish stands alone.

`python -I` alone is not enough (the editable install stays on sys.path), so a meta-path finder refuses
`pipeline` and checks that it really does before the code runs.
"""

import os
import subprocess
import sys
from pathlib import Path

BLOCK_PROJECT = """
import sys

class BlockProject:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pipeline":
            raise ModuleNotFoundError(f"{name} is blocked: what is published must not need this project")

sys.meta_path.insert(0, BlockProject())
try:
    import pipeline
except ImportError:
    pass
else:
    raise SystemExit("the blocker failed: pipeline is importable")
"""


def run_without_project(
    code: str, *args: str, cwd: Path, env: dict[str, str], timeout: int = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_PROJECT + code, *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
