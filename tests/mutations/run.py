"""Plant each known bug in a copy of the repo and check that the tests catch it (a contributors' tool).

    python tests/mutations/run.py            # every patch in tests/mutations/
    python tests/mutations/run.py NAME ...   # the named ones (file names without .patch)

Each `*.patch` is a `git diff` of one realistic bug; its first line names the tests that must catch it:
`tests: tests/test_x.py tests/test_y.py::test_z`. The script copies the working tree (tracked and untracked files,
not `.venv`, `.git` or ignored outputs) to a temporary folder, applies the patch there, runs those tests with the
copy first on `PYTHONPATH`, and reports each patch as CAUGHT, SURVIVED (every test green: a gap in the suite)
or STALE (no longer applies: update the patch with the code). Exit code 1 if any patch survived or is stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def tests_of(patch: Path) -> list[str]:
    first = patch.read_text(encoding="utf-8").splitlines()[0]
    if not first.startswith("tests:"):
        raise SystemExit(f"error: {patch}: the first line must be 'tests: <pytest node ids>', got {first!r}")
    return first.removeprefix("tests:").split()


def copy_tree(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def check(patch: Path) -> str:
    with tempfile.TemporaryDirectory(prefix=f"mutation-{patch.stem}-") as folder:
        copy = Path(folder)
        copy_tree(copy)
        applied = subprocess.run(["git", "apply", str(patch)], cwd=copy, capture_output=True, text=True)
        if applied.returncode != 0:
            return f"STALE     {patch.stem}: {applied.stderr.strip().splitlines()[0]}"
        env = {**os.environ, "PYTHONPATH": str(copy)}
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests_of(patch)],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
        verdict = "CAUGHT  " if tests.returncode != 0 else "SURVIVED"
        return f"{verdict}  {patch.stem}: {summary}"


def main(names: list[str]) -> int:
    patches = [HERE / f"{name}.patch" for name in names] if names else sorted(HERE.glob("*.patch"))
    failed = 0
    for patch in patches:
        line = check(patch)
        print(line, flush=True)
        failed += not line.startswith("CAUGHT")
    print(f"{len(patches) - failed} of {len(patches)} planted bugs caught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
