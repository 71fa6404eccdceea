"""Pseudonymisation of user ids in published tables (docs/privacy.md).

A pseudonym is ``u_`` + the first 32 hex digits of SHA-256(salt + U+001F + user_id):
stable for a salt (re-runs and later days join on it), unrelated across salts, and not
reversible without the salt. The salt comes from the environment variable named by
``privacy.salt_env`` (the Airflow DAG can fill it from a connection's password).
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd

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
    """Spark column of :func:`pseudonym` (null stays null), computed in a vectorised Python
    UDF: the salt travels inside the UDF's closure, never as a literal in the query plan
    (so not in ``explain()``, the Spark UI's SQL tab or event logs)."""
    from pyspark.sql import functions as F

    @F.pandas_udf("string")
    def pseudonymize(ids: pd.Series) -> pd.Series:
        return ids.map(lambda u: None if u is None else pseudonym(u, salt))

    return pseudonymize(col.cast("string"))


def pseudonymize_quarantine(q, salt: str):
    """The quarantine table as published with pseudonymisation on: the user id in event
    keys (``user|item|type|ts``) becomes its pseudonym, and rejects at landing keep their
    ``file:line`` key and reason but not the record's text (it may hold clear ids)."""
    q = q.copy()
    events = (q["source"] == "events") & (q["found_by"] != "landing")

    def key(k: str) -> str:
        user, _, rest = str(k).partition("|")
        return (user if user == "null" else pseudonym(user, salt)) + "|" + rest

    q.loc[events, "key"] = q.loc[events, "key"].map(key)
    q.loc[q["found_by"] == "landing", "detail"] = None
    return q


def pseudonymize_model(src, dst, salt: str):
    """Copy a saved CF model folder to ``dst`` with its user ids replaced by pseudonyms
    (the factors stay; ``user_recs.cf_score`` could otherwise link pseudonyms to ids)."""
    import shutil
    from pathlib import Path

    import numpy as np

    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    ids = np.load(dst / "user_ids.npy")
    np.save(dst / "user_ids.npy", np.array([pseudonym(u, salt) for u in ids.astype(str)]))
    return dst
