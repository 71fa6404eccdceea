"""Pseudonymisation of user ids in published tables (docs/privacy.md).

A pseudonym is ``u_`` + the first 32 hex digits of SHA-256(salt + U+001F + user_id):
stable for a salt (re-runs and later days join on it), unrelated across salts, and not
reversible without the salt. The salt comes from the environment variable named by
``privacy.salt_env`` (the Airflow DAG can fill it from a connection's password).
"""

from __future__ import annotations

import hashlib
import os

from vrec.config import PrivacySettings

SEP = "\x1f"
MIN_SALT_CHARS = 16


class PrivacyError(RuntimeError):
    """Raised when pseudonymisation is on but no usable salt is configured."""


def resolve_salt(privacy: PrivacySettings, environ: dict | None = None) -> str | None:
    """The salt when pseudonymisation is on (None when off); a clear error when it is
    on and the salt is missing or shorter than 16 characters."""
    if not privacy.pseudonymize:
        return None
    env = os.environ if environ is None else environ
    salt = env.get(privacy.salt_env, "")
    if len(salt) < MIN_SALT_CHARS:
        what = "unset" if not salt else f"shorter than {MIN_SALT_CHARS} characters"
        raise PrivacyError(
            f"privacy.pseudonymize is on but ${privacy.salt_env} is {what}; "
            "set it (or VREC_SALT_CONN_ID for the DAG) or turn pseudonymisation off")
    return salt


def pseudonym(user_id: str, salt: str) -> str:
    """The pseudonym of one user id (same formula as :func:`pseudonym_col`)."""
    return "u_" + hashlib.sha256((salt + SEP + str(user_id)).encode()).hexdigest()[:32]


def pseudonym_col(col, salt: str):
    """Spark column expression of :func:`pseudonym` (null stays null)."""
    from pyspark.sql import functions as F

    return F.concat(F.lit("u_"), F.substring(
        F.sha2(F.concat(F.lit(salt + SEP), col.cast("string")), 256), 1, 32))
