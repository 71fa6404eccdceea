"""Fault injection for tests: ``VREC_FAULT=<point>`` makes the process kill itself
(SIGKILL, like ``kill -9``) when it reaches the named point. Points: see
docs/operations.md "Crash safety". Unset in production; costs one environment lookup."""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here, at once and without cleanup, if ``VREC_FAULT`` names this point."""
    if os.environ.get("VREC_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
