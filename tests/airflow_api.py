"""A small client of Airflow's REST API (``/api/v2``) for the tests that drive a running
Airflow: a token from the simple auth manager's admin password, then JSON calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx


class Api:
    """The REST API the UI uses, logged in as ``admin`` with ``password()``."""

    def __init__(self, base: str, password: Callable[[], str]) -> None:
        self.base, self.password, self.headers = base, password, {}

    def login(self, deadline: float) -> None:
        while time.time() < deadline:
            try:
                r = httpx.post(f"{self.base}/auth/token",
                               json={"username": "admin", "password": self.password()}, timeout=10)
                if r.status_code in (200, 201):
                    self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
                    return
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            time.sleep(2)
        raise TimeoutError("the API server never answered /auth/token")

    def get(self, path: str, **params) -> dict:
        r = httpx.get(f"{self.base}/api/v2{path}", params=params, headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict) -> dict:
        r = httpx.post(f"{self.base}/api/v2{path}", json=body, headers=self.headers, timeout=60)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def patch(self, path: str, body: dict) -> dict:
        r = httpx.patch(f"{self.base}/api/v2{path}", json=body, headers=self.headers, timeout=60)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()


def wait(what: str, check, deadline: float, log: Path, every: float = 5):
    """Poll ``check()`` until truthy; fail with the tail of ``log``."""
    while time.time() < deadline:
        out = check()
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n" + log.read_text()[-4000:])
