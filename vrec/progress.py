"""Progress lines for long work: ``[vrec] <label>: 1,234/9,583 images [01:10<07:40,
16.2 images/s]``, rendered by tqdm (count, elapsed, ETA, rate), at most every
``every`` seconds (``$VREC_PROGRESS_SECONDS``, default 10) plus a final line, written as
plain lines (no bar, no carriage returns) so they read the same in an Airflow task log,
``make demo`` and a terminal.

:func:`progress` counts work done in this process (tuning grid points, evaluated
models); :func:`watch` polls a counter that others advance (a Spark accumulator that
the embedding tasks add to) from a background thread."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

from tqdm import tqdm

FORMAT = "{desc}: {n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_fmt}]"


def interval() -> float:
    """Seconds between progress lines (``$VREC_PROGRESS_SECONDS``, default 10)."""
    try:
        return max(0.0, float(os.environ.get("VREC_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


class _Lines:
    """A file for tqdm that turns each refresh into one ``[vrec]`` line on stdout (a
    refresh with the same count as the line before is not repeated)."""

    def __init__(self) -> None:
        self.last = None

    def write(self, s: str) -> None:
        s = s.strip("\r\n\x1b[A ")
        count = s.split(" [", 1)[0]
        if s and count != self.last:
            self.last = count
            print(f"[vrec] {s}", file=sys.stdout, flush=True)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def progress(label: str, total: int | None, unit: str = "items",
             every: float | None = None) -> Iterator[tqdm]:
    """A tqdm counter printing ``[vrec] label: n/total unit [...]`` lines; ``update(n)``
    it as work finishes. The last line is printed on exit."""
    bar = tqdm(total=total, desc=label, unit=" " + unit, file=_Lines(), bar_format=FORMAT,
               mininterval=interval() if every is None else every, miniters=1,
               dynamic_ncols=False, ascii=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def watch(label: str, total: int, read: Callable[[], int], unit: str = "items",
          every: float | None = None) -> Iterator[None]:
    """Progress of work done elsewhere: every ``every`` seconds ``read()`` gives the count
    done so far (e.g. a Spark accumulator's value) and a line is printed."""
    every = interval() if every is None else every
    stop = threading.Event()
    with progress(label, total, unit, every=0) as bar:
        def poll() -> None:
            while not stop.wait(max(every, 0.5)):
                done = int(read())
                if done != bar.n:
                    bar.update(done - bar.n)

        t = threading.Thread(target=poll, daemon=True, name=f"progress {label}")
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            done = int(read())
            if done != bar.n:
                bar.update(done - bar.n)
