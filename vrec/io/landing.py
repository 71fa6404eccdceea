"""When is a raw partition complete? The convention between upstream writers and vrec.

An upstream job writes a day's files into ``raw/<source>/ds=YYYY-MM-DD/`` and, when the
last file is in place, an empty ``_SUCCESS`` file next to them (Spark's and Hadoop's
writers create it themselves; vrec's own writers do too). The nightly DAG's first task
waits for that marker. Writers that cannot write a marker are still accepted once the
folder holds data files that nobody has touched for ``landing.quiet_minutes``; set it to
null to require the marker.

Pure functions on the file system, no Airflow: the sensor in ``vrec.airflow.sensors`` calls them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "_SUCCESS"


def is_data_file(path: Path) -> bool:
    """A data file of a partition: a regular file whose name does not start with ``_``
    or ``.`` (markers, checksums and in-flight temporary files do; Spark and pyarrow skip
    them the same way)."""
    return path.is_file() and not path.name.startswith(("_", "."))


def write_marker(folder: str | Path) -> Path:
    """Mark a partition folder complete (an empty ``_SUCCESS``); call after the last file."""
    marker = Path(folder) / MARKER
    marker.touch()
    return marker


def clear_marker(folder: str | Path) -> None:
    """Remove a partition's marker before rewriting its files (readers wait again)."""
    (Path(folder) / MARKER).unlink(missing_ok=True)


@dataclass(frozen=True)
class PartitionStatus:
    """Whether a raw partition is complete, and the facts the decision used."""

    folder: Path
    complete: bool
    why: str
    data_files: int
    marker: bool
    quiet_seconds: float | None  # since the newest data file was modified; None without files

    def describe(self) -> str:
        """One line for logs and the timeout message."""
        return f"{self.folder}: {self.why}"


def partition_status(folder: str | Path, *, quiet_minutes: float | None,
                     now: float | None = None) -> PartitionStatus:
    """Decide whether ``folder`` is complete: its ``_SUCCESS`` marker exists, or (when
    ``quiet_minutes`` is not None) it holds data files and the newest was modified at
    least ``quiet_minutes`` ago. ``now`` is a POSIX time (default: the clock)."""
    folder = Path(folder)
    now = time.time() if now is None else now
    if not folder.is_dir():
        return PartitionStatus(folder, False, "the folder does not exist yet", 0, False, None)
    files = [p for p in folder.iterdir() if is_data_file(p)]
    marker = (folder / MARKER).is_file()
    quiet = now - max(p.stat().st_mtime for p in files) if files else None
    if marker:
        return PartitionStatus(folder, True, f"{MARKER} present ({len(files)} data files)",
                               len(files), True, quiet)
    if not files:
        return PartitionStatus(folder, False, f"no data files and no {MARKER} yet", 0, False, None)
    if quiet_minutes is None:
        return PartitionStatus(folder, False, f"{len(files)} data files, waiting for {MARKER} "
                               "(landing.quiet_minutes is null: the marker is required)",
                               len(files), False, quiet)
    if quiet >= quiet_minutes * 60:
        return PartitionStatus(folder, True, f"no {MARKER}, but {len(files)} data files untouched "
                               f"for {quiet / 60:.0f} min (>= landing.quiet_minutes "
                               f"{quiet_minutes:g})", len(files), False, quiet)
    return PartitionStatus(folder, False, f"{len(files)} data files, no {MARKER}, newest modified "
                           f"{quiet / 60:.1f} min ago (complete after {quiet_minutes:g} quiet min)",
                           len(files), False, quiet)


def timeout_message(folder: str | Path, last_seen: str, waited: dt.timedelta) -> str:
    """The failure message when the wait gives up: which path was expected, and what is there."""
    return (f"events for this run never completed: waited {_human(waited)} for "
            f"{Path(folder) / MARKER} (or data files quiet for landing.quiet_minutes); "
            f"last seen: {last_seen}. Land the day's files there and write {MARKER} last "
            "(docs/scheduling.md, \"Landing: when is a day complete?\"), then clear this task "
            "to wait again.")


def _human(td: dt.timedelta) -> str:
    s = int(td.total_seconds())
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s / 3600:.1f} h"
