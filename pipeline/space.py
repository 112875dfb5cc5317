"""A Hugging Face Space for a published model: the demo page, runnable without this project installed.

The Space gets `app.py`, a README whose front matter says `sdk: gradio` and links the model, the shipped NIH
examples, and the project's own modules that the page imports (`demo_page` and everything it imports from
`pipeline`, found by reading their import statements), copied at push time into the package `chestxray_demo/`.
The copies are the same source; only the package name in their import lines changes. `requirements.txt` lists
the published distributions those modules import, with this project's own version ranges.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from pipeline.errors import UserError

PROJECT = "pipeline"
PROJECT_DISTRIBUTION = "chestxray-pipeline"
PACKAGE_DIR = Path(__file__).resolve().parent
SPACE_PACKAGE = "chestxray_demo"
ENTRY_MODULE = "pipeline.demo_page"
SPACE_TAGS = ["medical-imaging", "chest-x-ray", "nih-chestxray14"]
_PROJECT_IMPORT = re.compile(rf"^(\s*(?:from|import)\s+){PROJECT}(?=[\s.])", re.MULTILINE)

APP_TEMPLATE = '''"""The demo page of {repo_id}, written by `chestxray push --space` (https://huggingface.co/{repo_id}).

Set CHESTXRAY_MODEL to a local model folder to run it on that instead of the Hub model.
"""

import os

from {package}.demo_page import DemoModel, build_demo, launch

MODEL = os.environ.get("CHESTXRAY_MODEL", "{repo_id}")
EXAMPLES = {examples}

HERE = os.path.dirname(os.path.abspath(__file__))

demo = build_demo(DemoModel(MODEL), [(os.path.join(HERE, path), title) for path, title in EXAMPLES])

if __name__ == "__main__":
    launch(demo, host=None)
'''


class SpaceError(UserError, ValueError):
    """The Space cannot be written as asked (a module that cannot be copied, a bad Space id)."""


def _module_file(module: str) -> Path | None:
    """The source file of a project module (`pipeline.x.y`), or None when the name is not a module."""
    relative = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for candidate in (relative / "__init__.py", relative.parent / f"{relative.name}.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join([PROJECT, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _package(path: Path) -> str:
    """The package a project file's relative imports start from."""
    return _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]


def _imports(path: Path, package: str) -> Iterable[str]:
    """Every module name an import statement in `path` names (top-level or inside functions), relative ones
    resolved from `package`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def module_closure(entry: str = ENTRY_MODULE) -> list[Path]:
    """The project's source files that `entry` needs: its imports of `pipeline.*`, theirs, and the packages'
    `__init__.py` files on the way, sorted."""
    found: set[Path] = set()
    pending = [entry]
    while pending:
        module = pending.pop()
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:depth]))
            if path is not None and path not in found:
                found.add(path)
                pending += [name for name in _imports(path, _package(path)) if name.partition(".")[0] == PROJECT]
    return sorted(found)


def third_party_imports(files: Iterable[Path]) -> set[str]:
    """Top-level names of the non-standard-library modules the files import."""
    names = {name.partition(".")[0] for path in files for name in _imports(path, _package(path)) if name}
    return {name for name in names if name != PROJECT and name not in sys.stdlib_module_names}


def requirements(modules: Iterable[str]) -> list[str]:
    """One line per published distribution that provides `modules`, with this project's version range for it
    (from its installed metadata, extras included; a bare name where it declares none), sorted."""
    providers = importlib.metadata.packages_distributions()
    missing = sorted(name for name in modules if name not in providers)
    if missing:
        raise SpaceError(f"no installed distribution provides {', '.join(missing)}; cannot write requirements.txt")
    distributions = {providers[name][0].lower().replace("_", "-") for name in modules}
    try:
        declared = importlib.metadata.requires(PROJECT_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        declared = []
    ranges: dict[str, str] = {}
    for line in declared:
        requirement = line.partition(";")[0].strip()
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        ranges.setdefault(name, requirement)
    return sorted(ranges.get(name, name) for name in distributions)


def copy_modules(files: Sequence[Path], folder: Path) -> list[Path]:
    """Copy the project files into `folder/chestxray_demo/` with `pipeline` renamed in their import lines."""
    copies = []
    for path in files:
        target = folder / SPACE_PACKAGE / path.relative_to(PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_PROJECT_IMPORT.sub(rf"\g<1>{SPACE_PACKAGE}", path.read_text(encoding="utf-8")))
        left = [name for name in _imports(target, SPACE_PACKAGE) if name.partition(".")[0] == PROJECT]
        if left:
            raise SpaceError(f"{path}: import of {left[0]} is not on an import line that can be renamed")
        copies.append(target)
    return copies


def space_card(space_id: str, repo_id: str, license: str, modules: Sequence[str]) -> SpaceCard:
    """The Space's README: Gradio front matter that links the model, and what the Space is made of."""
    gradio_version = importlib.metadata.version("gradio")
    data = SpaceCardData(
        title=space_id.split("/")[-1],
        sdk="gradio",
        sdk_version=gradio_version,
        app_file="app.py",
        license=license,
        models=[repo_id],
        tags=SPACE_TAGS,
        short_description="Chest X-ray findings (NIH ChestX-ray14), research only",
    )
    listing = ", ".join(f"`{name}`" for name in modules)
    content = f"""---
{data.to_yaml()}
---

# {space_id.split("/")[-1]}

The demo page of [{repo_id}](https://huggingface.co/{repo_id}): upload a chest X-ray (PNG, JPEG or DICOM) and see
the 14 NIH ChestX-ray14 findings with their probabilities and thresholds, and a heat map for the finding you pick.

**A research model, not a diagnostic device.** Uploaded images are not kept: each is deleted once decoded.

Written by `chestxray push --space`. `{SPACE_PACKAGE}/` holds the project's own modules the page needs ({listing}),
copied unchanged except for the package name in their import lines, so the numbers are those of
`chestxray predict`. Example images: NIH ChestX-ray14, NIH Clinical Center
(https://nihcc.app.box.com/v/ChestXray-NIHCC); Wang et al., CVPR 2017.
"""
    return SpaceCard(content)


def write_space_folder(
    folder: str | Path,
    space_id: str,
    repo_id: str,
    examples: Sequence[tuple[Path, str]],
    *,
    license: str,
) -> list[str]:
    """Write the Space of `repo_id` into the empty `folder`; return its files, sorted."""
    folder = Path(folder)
    files = module_closure()
    copy_modules(files, folder)
    (folder / "requirements.txt").write_text("\n".join(requirements(third_party_imports(files))) + "\n")
    (folder / "examples").mkdir()
    for path, _ in examples:
        shutil.copy2(path, folder / "examples" / path.name)
    listed = [(f"examples/{path.name}", title) for path, title in examples]
    (folder / "app.py").write_text(APP_TEMPLATE.format(repo_id=repo_id, package=SPACE_PACKAGE, examples=listed))
    space_card(space_id, repo_id, license, [_module_name(path) for path in files]).save(folder / "README.md")
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
