"""Talking to the Hugging Face Hub: what went wrong, in one line a user can act on."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from pipeline import run_folder
from pipeline.demo import INSTALL_HINT as DEMO_INSTALL_HINT
from pipeline.errors import UserError
from pipeline.locations import check_repo_id
from pipeline.run_folder import RunFolder, RunFolderError

# pipeline.cards (datasets, numpy) is imported where a card is rendered, so that `push --help` is instant.

# Network errors come from the HTTP client huggingface_hub uses (httpx/httpx2), which are not OSErrors.
_NETWORK_MODULES = ("httpx", "httpx2", "requests", "urllib3")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe_hub_error(exc: BaseException) -> str:
    """One line saying why a Hub call failed and what to do, instead of a traceback."""
    if isinstance(exc, OfflineModeIsEnabled):
        return "the Hub is not reachable in offline mode (HF_HUB_OFFLINE=1); unset it to upload"
    if isinstance(exc, LocalTokenNotFoundError):
        return "not logged in to the Hub: run `hf auth login` or set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repository not found, or this token may not access it: {_first_line(exc)}"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            return "the Hub refused the token (HTTP 401): run `hf auth login` or set a valid HF_TOKEN"
        if status == 403:
            return "the token may not write to this repository (HTTP 403): use a token with write access"
        return f"the Hub answered HTTP {status}: {_first_line(exc)}"
    if isinstance(exc, ConnectionError | TimeoutError) or type(exc).__module__.split(".")[0] in _NETWORK_MODULES:
        return f"cannot reach the Hub at {constants.ENDPOINT} ({type(exc).__name__}: {_first_line(exc)})"
    return f"{type(exc).__name__}: {_first_line(exc)}"


# ---- Publishing a run folder: `chestxray push` ---------------------------------------------------------------

# What a model repo gets from a run folder; checkpoints, optimizer state and predictions stay behind.
MODEL_FILES = (run_folder.MODEL_CONFIG, run_folder.PROCESSOR_CONFIG)
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
RESULT_FILES = (
    run_folder.THRESHOLDS,
    run_folder.ALL_RESULTS,
    run_folder.EVAL_RESULTS,
    run_folder.TEST_RESULTS,
    run_folder.RUN_CONFIG,
    run_folder.TEST_SPLIT,
)
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"


class PushError(UserError, RuntimeError):
    """Publishing failed for a reason the user can fix; the message is one line saying which."""


def _run_files(run_dir: Path) -> list[Path]:
    """The run folder's files that are published (model, processor, custom code, results), checked to exist."""
    from pipeline.cards import custom_code_files

    missing = [name for name in MODEL_FILES if not (run_dir / name).is_file()]
    weights = sorted({path for pattern in WEIGHT_PATTERNS for path in run_dir.glob(pattern)})
    if not weights:
        missing.append("model.safetensors")
    code = []
    if not missing:
        model_config = RunFolder(run_dir).model_config()
        _check_auto_map(run_dir, model_config)
        code = [run_dir / name for name in custom_code_files(model_config)]
    missing += [path.name for path in code if not path.is_file()]
    if missing:
        raise RunFolderError(f"{run_dir}: missing {', '.join(missing)}; is it a run folder written by training?")
    results = [run_dir / name for name in RESULT_FILES if (run_dir / name).is_file()]
    files = [*(run_dir / name for name in MODEL_FILES), *weights, *code, *results]
    outside = [path.name for path in files if not path.resolve().is_relative_to(run_dir.resolve())]
    if outside:
        raise PushError(f"{run_dir}: {', '.join(outside)} link(s) to files outside the run folder; refusing to publish")
    return files


def _check_auto_map(run_dir: Path, model_config: dict[str, Any]) -> None:
    """Custom code must be a module beside config.json: `auto_map` can name any path, and only files inside
    the run folder may ever be uploaded."""
    for key, references in (model_config.get("auto_map") or {}).items():
        for reference in references if isinstance(references, list) else [references]:
            module = str(reference).split("--")[-1].rsplit(".", 1)[0]
            if not module.isidentifier():
                raise PushError(
                    f"{run_dir / 'config.json'}: auto_map entry {key!r} = {reference!r} does not name a module "
                    "inside the run folder; only files inside the run folder are published"
                )


def write_upload_folder(
    run_dir: str | Path,
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    license: str | None = None,
    dataset_id: str | None = None,
    space_id: str | None = None,
) -> list[str]:
    """Write into the empty `folder` everything a push of `run_dir` uploads; return the paths, sorted.

    The model card is rendered for `repo_id`/`revision` (with `license`, default: the card's; linking the demo
    Space `space_id`, if any) and the shipped NIH example images go under examples/.
    """
    from pipeline.cards import example_images, render_model_card

    run_dir, folder = Path(run_dir), Path(folder)
    _check_run_dir(run_dir)
    check_repo_id(repo_id, "--repo-id")
    files = _run_files(run_dir)
    examples = example_images()
    card = render_model_card(
        run_dir,
        repo_id,
        revision=revision,
        dataset_id=dataset_id,
        examples=examples,
        space_id=space_id,
        **({"license": license} if license else {}),
    )
    for path in files:
        shutil.copy2(path, folder / path.name)
    (folder / "examples").mkdir()
    for example in examples:
        shutil.copy2(example.path, folder / example.repo_path)
    card.save(folder / "README.md")
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise PushError(f"{run_dir}: run folder not found")


def _check_space(space_id: str) -> None:
    """Refuse a bad Space id, or a Space without Gradio installed, before anything is written."""
    check_repo_id(space_id, "--space")
    if importlib.util.find_spec("gradio") is None:
        raise PushError(f"--space needs Gradio (its version goes into the Space): {DEMO_INSTALL_HINT}")


def write_space(folder: str | Path, space_id: str, repo_id: str, *, license: str | None = None) -> list[str]:
    """Write into the empty `folder` the demo Space of the model `repo_id` (see `pipeline.space`)."""
    from pipeline.cards import DEFAULT_LICENSE, example_images
    from pipeline.space import write_space_folder

    _check_space(space_id)
    examples = [(example.path, example.title) for example in example_images()]
    return write_space_folder(folder, space_id, repo_id, examples, license=license or DEFAULT_LICENSE)


def _check_no_token(folder: Path, token: str | None) -> None:
    """Refuse to publish a folder in which any file contains the Hub token."""
    if not token:
        return
    for path in folder.rglob("*"):
        if path.is_file() and token.encode() in path.read_bytes():
            raise PushError(f"{path.relative_to(folder)} contains your Hub token; refusing to publish it")


def prepare_dry_run(
    run_dir: str | Path,
    out_dir: str | Path,
    repo_id: str,
    *,
    overwrite: bool = False,
    space_id: str | None = None,
    **options: str | None,
) -> list[str]:
    """Write exactly the folder that `push_run` would upload to `out_dir` (with `space_id`: the model folder and
    the Space folder side by side, `out_dir/model` and `out_dir/space`); never replaces a non-empty folder
    unless `overwrite`, and never one that holds the run itself. A failure leaves no `out_dir` behind (an empty
    one the user had stays)."""
    run_dir, out_dir = Path(run_dir).resolve(), Path(out_dir).resolve()
    _check_run_dir(run_dir)
    check_repo_id(repo_id, "--repo-id")
    if space_id is not None:
        _check_space(space_id)
    if out_dir.exists() and not out_dir.is_dir():
        raise PushError(f"--dry-run {out_dir} is a file; give a folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise PushError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        if out_dir == run_dir or out_dir in run_dir.parents:
            raise PushError(f"{out_dir} holds the run folder {run_dir}; choose another --dry-run folder")
    # Written beside out_dir and moved into place at the end: a failure never leaves a half folder, nor the
    # parent folders made for it.
    created = [folder for folder in (out_dir.parent, *out_dir.parent.parents) if not folder.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent) as tmp:
            files = _write_push_folders(Path(tmp), run_dir, repo_id, space_id, **options)
            _check_no_token(Path(tmp), get_token())
            if out_dir.exists():
                shutil.rmtree(out_dir)
            Path(tmp).rename(out_dir)
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    return files


def _write_push_folders(
    folder: Path, run_dir: Path, repo_id: str, space_id: str | None, **options: str | None
) -> list[str]:
    """The model's upload folder in `folder`, or with `space_id` `folder/model` and `folder/space` side by side."""
    if space_id is None:
        return write_upload_folder(run_dir, folder, repo_id, **options)
    (folder / "model").mkdir()
    (folder / "space").mkdir()
    files = [
        f"model/{name}"
        for name in write_upload_folder(run_dir, folder / "model", repo_id, space_id=space_id, **options)
    ]
    space = write_space(folder / "space", space_id, repo_id, license=options.get("license"))
    return files + [f"space/{name}" for name in space]


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    license: str | None = None,
    dataset_id: str | None = None,
    space_id: str | None = None,
) -> str:
    """Publish a run folder as the model repo `repo_id` in one commit; return the commit's URL.

    Uploads the model, image processor, custom code, card, thresholds, results and example images; with
    `space_id`, then the demo Space (a Gradio Space repo) in a second commit. The token (default: the logged-in
    one) only goes to `HfApi`, never into a file.
    """
    _check_run_dir(Path(run_dir))
    check_repo_id(repo_id, "--repo-id")
    if space_id is not None:
        _check_space(space_id)
    token = token or get_token()
    if not token:
        raise PushError(f"not logged in to the Hub: {LOGIN_HINT}")
    if constants.is_offline_mode():
        raise PushError("the Hub is not reachable in offline mode (HF_HUB_OFFLINE=1); unset it to upload")
    with tempfile.TemporaryDirectory(prefix="chestxray-push-") as tmp:
        tmp = Path(tmp)
        _write_push_folders(
            tmp, Path(run_dir), repo_id, space_id, revision=revision, license=license, dataset_id=dataset_id
        )
        _check_no_token(tmp, token)
        model_dir = tmp / "model" if space_id else tmp
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=model_dir,
                revision=revision,
                commit_message=commit_message or f"Upload {Path(run_dir).name} (chest X-ray classifier)",
            )
        except Exception as exc:  # any Hub/network failure: one line, not a traceback
            raise PushError(f"upload to {repo_id} failed: {describe_hub_error(exc)}") from exc
        if space_id:
            try:
                api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
                api.upload_folder(
                    repo_id=space_id, repo_type="space", folder_path=tmp / "space", commit_message=f"Demo of {repo_id}"
                )
            except Exception as exc:  # the model is up; say that the Space is not
                reason = describe_hub_error(exc)
                raise PushError(f"{repo_id} is published, but the Space {space_id} failed: {reason}") from exc
    return commit.commit_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="Run folder written by training.")
    parser.add_argument("--repo-id", required=True, help="Model repository on the Hub, ORG/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", help="Branch to push to (created if missing; default: main).")
    parser.add_argument("--commit-message", help="Commit message (default: names the run).")
    parser.add_argument("--license", help="License in the card (default: apache-2.0, the card's own).")
    parser.add_argument("--dataset-id", help="Hub dataset id for the card (default: the run's, if a Hub id).")
    parser.add_argument(
        "--space",
        metavar="ORG/NAME",
        help="Also publish the model's demo page as this Gradio Space (needs the extra: pip install -e '.[demo]').",
    )
    parser.add_argument(
        "--dry-run",
        type=Path,
        metavar="DIR",
        help="Write the folder that would be uploaded to DIR (with --space: DIR/model and DIR/space).",
    )
    parser.add_argument("--overwrite", action="store_true", help="With --dry-run: replace a non-empty DIR.")


def _print_listing(folder: Path, files: list[str], repo_id: str, space_id: str | None) -> None:
    sizes = {name: (folder / name).stat().st_size for name in files}
    for name in files:
        print(f"{sizes[name]:>12,}  {name}")
    total = sum(sizes.values()) / 1e6
    target = f"{repo_id} (model/) and the Space {space_id} (space/)" if space_id else repo_id
    print(f"dry run: {len(files)} files ({total:.1f} MB) in {folder} would be pushed to {target}; nothing uploaded")


def run_cli(args: argparse.Namespace) -> None:
    options = {
        "revision": args.revision,
        "license": args.license,
        "dataset_id": args.dataset_id,
        "space_id": args.space,
    }
    check_repo_id(args.repo_id, "--repo-id")
    if args.dry_run is not None:
        files = prepare_dry_run(args.run_dir, args.dry_run, args.repo_id, overwrite=args.overwrite, **options)
        _print_listing(args.dry_run, files, args.repo_id, args.space)
    else:
        url = push_run(args.run_dir, args.repo_id, private=args.private, commit_message=args.commit_message, **options)
        print(f"pushed {args.run_dir} to {url}")
        if args.space:
            print(f"demo page: https://huggingface.co/spaces/{args.space}")
