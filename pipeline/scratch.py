"""Hidden scratch folders that name their owner, so that a later run can remove those whose owner died.

A conversion builds its output in `.<name>.partial-XXXX` next to it and removes that folder when it ends; a
`kill -9` leaves it behind. The folder holds `owner.json`: host name, process id and the process's start
time (`/proc/PID/stat`, field 22). A later run removes a folder only when the owner is provably dead: same
host, and no process with that id or one started at another time (a process id alone is reused). A folder
of another host (a shared filesystem), of a live process, or without a readable marker is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

OWNER_FILE = "owner.json"


def process_start_time(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks after boot; None when there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its last ")".
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_time": process_start_time(os.getpid())}


def partial_prefix(output: Path) -> str:
    return f".{output.name}.partial-"


def make_scratch_dir(output: Path) -> Path:
    """A new hidden folder next to `output`, marked as this process's."""
    scratch = Path(tempfile.mkdtemp(prefix=partial_prefix(output), dir=output.parent))
    (scratch / OWNER_FILE).write_text(json.dumps(_owner()), encoding="utf-8")
    return scratch


def _owner_is_dead(scratch: Path) -> bool:
    try:
        owner = json.loads((scratch / OWNER_FILE).read_text(encoding="utf-8"))
        host, pid, start_time = owner["host"], int(owner["pid"]), owner["start_time"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or start_time is None or process_start_time(os.getpid()) is None:
        return False
    return process_start_time(pid) != start_time


def remove_stale_scratch(output: Path) -> list[Path]:
    """Remove the scratch folders of `output` left by dead conversions on this host; return them."""
    removed = []
    for scratch in sorted(output.parent.glob(partial_prefix(output) + "*")):
        if scratch.is_dir() and _owner_is_dead(scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
            logger.warning("removed %s, left by a conversion that was killed", scratch)
        elif scratch.is_dir():
            logger.warning("left %s alone: not provably from a dead conversion on this host", scratch)
    return removed
