"""One design for the user's mistakes: raise a `UserError`, and the entry point prints one line.

Every command (`chestxray …`, the recipe scripts) runs through `run_main`, the one place where a user error
becomes `error: …` on stderr and exit code 2. A traceback means a bug in this project, never bad input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """Bad input, a bad setting or a missing file, told in one line: which file, row or setting, what was expected."""


def run_main(command: Callable[[], int | None]) -> int:
    """Run an entry point; a `UserError` becomes one `error: …` line and exit code 2."""
    try:
        return command() or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
