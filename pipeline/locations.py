"""Where a name points: a local folder, or a repo on the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from pipeline.errors import UserError


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only mean a folder, not a Hub id (`name` or `org/name`): it starts with `.`, `/` or
    `~`, has more than two parts or a backslash, or its first part is an existing local folder."""
    parts = Path(name).parts
    return (
        name.startswith((".", "/", "~"))
        or (os.sep != "/" and os.sep in name)
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).expanduser().is_dir())
    )


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repo id `org/name` rather than a local path (which it must not exist as)."""
    name = str(name or "")
    return name.count("/") == 1 and not looks_like_local_path(name) and not Path(name).exists()


def check_repo_id(repo_id: str, setting: str) -> str:
    """A Hub repo id to publish to must be `org/name`: a bare `name` would make every link in a card wrong."""
    expected = "expected ORG/NAME, e.g. my-org/vit-b16-chestxray14"
    if repo_id.count("/") != 1:
        raise UserError(f"{setting} {repo_id!r} is not a Hub repo id: {expected}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(f"{setting} {repo_id!r} is not a Hub repo id: {str(error).splitlines()[0]}") from None
    return repo_id
