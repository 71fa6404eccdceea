"""Fault injection for tests: ``VREC_FAULT=<point>`` makes the process kill itself
(SIGKILL, like ``kill -9``) when it reaches the named point; ``VREC_FAULT=<point>=hang``
makes it stop there (sleep) until killed. Points: see docs/operations.md "Crash
safety". Unset in production; costs one environment lookup."""

from __future__ import annotations

import os
import signal
import time


def point(name: str) -> None:
    """Die here, at once and without cleanup, if ``VREC_FAULT`` names this point."""
    fault = os.environ.get("VREC_FAULT")
    if fault == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == f"{name}=hang":
        print(f"[vrec] fault injection: hanging at {name}", flush=True)
        time.sleep(3600)
