"""Locks on the warehouse's file system (docs/operations.md "Locks").

A lock is an OS advisory lock (``flock``) on a file under ``<warehouse>/_locks/`` (or a
run's staging folder) that also holds a note naming its holder (host, pid, run id, what,
since). The kernel releases the lock when its process dies, so a lock left by a killed
process is never stale: the next taker gets it at once, overwrites the note, and logs
that the previous holder was gone. Needs a file system where ``flock`` works between all
hosts that run stages (local disks, NFSv4; not NFSv3 without lockd).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """Someone else holds the lock; the message names the holder."""

    input_problem = True  # an operational condition: said in one line, no stack trace


def holder_note(what: str, **extra) -> dict:
    """The note a lock holder leaves: host, pid, what it does, since when, and extras."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "what": what,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **extra}


def read_note(path: str | Path) -> dict:
    """The holder note in a lock file ({} when none or unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(note: dict) -> str:
    """One line naming a holder."""
    if not note:
        return "an unknown holder"
    run = f" run {note['run_id']}" if note.get("run_id") else ""
    return (f"{note.get('what', '?')}{run} (pid {note.get('pid')} on {note.get('host')}, "
            f"since {note.get('since')})")


@contextlib.contextmanager
def hold(path: str | Path, note: dict, *, wait_seconds: float = 0.0,
         what: str = "this lock") -> Iterator[dict]:
    """Hold the lock ``path`` (created if needed) with ``note`` while the block runs.

    Waits up to ``wait_seconds`` for another holder, then raises :class:`LockHeld` naming
    it. Yields the previous note when its holder had died without releasing (else {})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(f"{what} is held by {describe(read_note(path))}; lock file "
                                   f"{path}") from None
                time.sleep(0.2)
        stale = read_note(path)  # a holder that released cleared its note: this one died
        if stale:
            log.warning("took %s: its previous holder %s is gone (the kernel released its lock)",
                        what, describe(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
        try:
            yield stale
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
