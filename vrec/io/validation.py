"""Great Expectations gates (docs/validation.md). GX is imported lazily, once per process.

Suites live in the File Data Context ``expectations/`` (see :mod:`vrec.io.gxcontext`), one
per table; each expectation has a GX ``severity``: ``critical`` failures fail the task
before anything downstream runs, ``warning`` ones are recorded. Suite parameters
(``{"$PARAMETER": "k"}``) are filled per run. Before validation vrec adds a few derived
columns a declarative suite cannot compute itself (``known_item``, ``ts_not_future``,
``is_duplicate``, ``image_ok``, ``norm``...); the functions below build those frames.

**Two engines, one suite.** Every suite can run on GX's pandas engine or its Spark
engine. GX on Spark computes each metric as its own small Spark job (thousands of py4j
round trips for a few thousand rows), so a frame of at most
``validation.pandas_max_rows`` rows is collected (one Arrow transfer) and validated by
the pandas engine; a larger one is cached and validated by the Spark engine.
:func:`validate_all` decides from a row count known without a Spark job (Parquet
footers), and each result says which engine ran (``SuiteResult.engine``, the stage
record's ``validation_engines``). ``tests/test_validation.py`` runs the same frames
through both engines and gets the same verdicts and counts.

Results are stored per ds in GX's validation results store under
``<warehouse>/reports/gx/validations/``, and the Data Docs pages of the results just
made are rendered into ``<warehouse>/reports/gx/data_docs/`` (with the index).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """A critical expectation failed; the message names each with its observed value (an
    input problem: the runner prints it without a stack trace)."""

    input_problem = True


@dataclass
class SuiteResult:
    """Outcome of one suite on one table, and the engine that validated it."""

    suite: str
    success: bool
    failures: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    evaluated: int = 0
    rows: int | None = None
    engine: str = "pandas"
    # per expectation: (success, unexpected rows; None where the engine checks the column
    # as a whole, e.g. a type on Spark)
    checks: dict[str, tuple[bool, int | None]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"suite": self.suite, "success": self.success, "evaluated": self.evaluated,
                "rows": self.rows, "engine": self.engine, "failures": self.failures,
                "warnings": self.warnings}


def reports_dir(warehouse: str | Path) -> Path:
    """Where GX results and Data Docs of every run go."""
    return Path(warehouse) / "reports" / "gx"


def docs_index(warehouse: str | Path) -> Path:
    """The Data Docs start page."""
    return reports_dir(warehouse) / "data_docs" / "index.html"


def _observed(result: dict) -> str:
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list") or []
        return (f"{result['unexpected_count']} unexpected "
                f"({result.get('unexpected_percent') or 0:.2f}%), e.g. {sample[:3]}")
    return "column or table missing" if not result else json.dumps(result, default=str)[:200]


def _param(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_pandas(df) -> bool:
    """Whether ``df`` is a pandas frame (else a Spark DataFrame)."""
    return isinstance(df, pd.DataFrame)


def _expectation_key(cfg) -> str:
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    return f"{cfg.type}:{cfg.severity}:{json.dumps(kwargs, sort_keys=True, default=str)}"


def run_suite(ctx, df, suite: str, params: dict | None, *, ds: str) -> tuple[SuiteResult, object]:
    """Run ``suite`` on ``df`` with suite parameters, on the engine of the frame (pandas
    or Spark: :func:`vrec.io.gxcontext.definition_name`); the result is stored in the
    context's store under ds. Returns the result and GX's result identifier."""
    from great_expectations.core.run_identifier import RunIdentifier

    from vrec.io.gxcontext import definition_name

    engine = "pandas" if is_pandas(df) else "spark"
    vd = ctx.validation_definitions.get(definition_name(suite, engine))
    run_id = RunIdentifier(run_name=ds, run_time=dt.datetime.now(dt.UTC))
    res = vd.run(batch_parameters={"dataframe": df},
                 expectation_parameters={k: _param(v) for k, v in (params or {}).items()},
                 run_id=run_id, result_format="SUMMARY")
    out = SuiteResult(suite=suite, success=True, evaluated=len(res.results), engine=engine)
    for r in res.results:
        cfg = r.expectation_config
        out.checks[_expectation_key(cfg)] = (bool(r.success),
                                             (r.result or {}).get("unexpected_count"))
        if r.success:
            continue
        kwargs = {k: v for k, v in cfg.kwargs.items()
                  if k != "batch_id" and not (isinstance(v, list) and len(v) > 10)}
        sev = getattr(cfg.severity, "value", str(cfg.severity)).lower()
        rec = {"expectation": cfg.type, "kwargs": kwargs, "observed": _observed(r.result or {}),
               "severity": sev}
        if sev == "critical":
            out.success = False
            out.failures.append(rec)
        else:
            out.warnings.append(rec)
    return out, _result_identifier(ctx, res, suite, run_id)


def _result_identifier(ctx, res, suite: str, run_id):
    """GX's key of the result just stored (for rendering only its Data Docs page), or
    None when it cannot be told (the whole site is rebuilt then)."""
    try:
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        batch = res.meta.get("active_batch_definition") or {}
        # a whole-dataframe batch is named <data source>-<asset>
        batch_id = f"{batch['datasource_name']}-{batch['data_asset_name']}"
        rid = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite),
            run_id=run_id, batch_identifier=batch_id)
        return rid if ctx.validation_results_store.has_key(rid) else None
    except Exception:  # Data Docs then rebuild in full
        return None


def validate_all(warehouse: str | Path, ds: str, frames: dict, params: dict, *,
                 pandas_max_rows: int) -> list[SuiteResult]:
    """Run each suite on its frame, store the results (GX's results store) and render
    their Data Docs pages. ``frames`` maps suite -> (dataframe, rows): a pandas frame,
    or a Spark DataFrame with its row count when known without a Spark job (None:
    counted). A Spark frame of at most ``pandas_max_rows`` rows is collected and
    validated by the pandas engine; a larger one is cached and validated on Spark."""
    from vrec.io.gxcontext import open_context

    ctx = open_context(reports_dir(warehouse))
    results, ids = [], []
    for suite, (df, rows) in frames.items():
        cached = None
        if not is_pandas(df):
            if rows is None or rows > pandas_max_rows:
                cached = df.cache()
                rows = cached.count()
            if rows <= pandas_max_rows:
                df = (df if cached is None else cached).toPandas()
        try:
            r, rid = run_suite(ctx, df if is_pandas(df) else cached, suite, params, ds=ds)
        finally:  # a cached plan would serve stale rows to a rerun after the files changed
            if cached is not None:
                cached.unpersist()
        r.rows = len(df) if is_pandas(df) else rows
        results.append(r)
        ids.append(rid)
    try:
        if all(i is not None for i in ids):
            ctx.build_data_docs(resource_identifiers=ids)
        else:
            ctx.build_data_docs()
    except Exception as exc:  # docs are a report; a rendering problem must not hide results
        log.warning("building GX Data Docs failed: %s", exc)
    return results


def engines(results: list[SuiteResult]) -> dict[str, str]:
    """The engine that validated each suite (the stage record's ``validation_engines``)."""
    return {r.suite: r.engine for r in results}


def summarize(results: list[SuiteResult]) -> dict:
    """Per suite, for the stage record (and run_stats.details): success, rows, rows
    evaluated, the engine, the names of failed and warned expectations (``failed``, ``warnings``)
    and each of them with its arguments and observed value (``failures``, ``warned``)."""
    return {r.suite: {"success": r.success, "rows": r.rows, "evaluated": r.evaluated,
                      "engine": r.engine, "failed": [f["expectation"] for f in r.failures],
                      "warnings": [f["expectation"] for f in r.warnings],
                      "failures": r.failures, "warned": r.warnings} for r in results}


def raise_on_failure(results: list[SuiteResult]) -> None:
    """Raise ValidationFailed naming every failed critical expectation."""
    lines = [f"{r.suite}: {f['expectation']} {f['kwargs']} -> observed {f['observed']}"
             for r in results for f in r.failures]
    if lines:
        raise ValidationFailed("critical expectations failed:\n  " + "\n  ".join(lines))


# ---------------------------------------------------------------- frames with derived columns

def catalog_frame(catalog: pd.DataFrame, image_root: str | Path,
                  roots: list | tuple = ()) -> pd.DataFrame:
    """The catalog snapshot plus image_ok (image_uri names a non-empty regular file under
    the allowed image roots)."""
    import stat

    from vrec.images.embed import locate_image
    from vrec.images.imagequality import ImageError

    out = catalog.copy()
    uris = out[C.IMAGE_URI] if C.IMAGE_URI in out else pd.Series([None] * len(out))

    def ok(uri) -> bool:
        try:
            p = locate_image(uri if isinstance(uri, str) else None, image_root, roots)
            if p is None:
                return False
            st = p.stat()
            return stat.S_ISREG(st.st_mode) and st.st_size > 0
        except (OSError, ImageError):
            return False

    out["image_ok"] = [ok(u) for u in uris]
    return out


def embeddings_frame(vectors: pd.DataFrame, catalog_ids: set) -> pd.DataFrame:
    """item_id, dim, norm, has_nan, known_item of the run's item vectors."""
    vecs = [np.asarray(v, dtype=np.float64) for v in vectors["embedding"]]
    return pd.DataFrame({
        C.ITEM_ID: vectors[C.ITEM_ID].astype(str).to_numpy(),
        "dim": [len(v) for v in vecs],
        "norm": [float(np.linalg.norm(v)) if not np.isnan(v).any() else 0.0 for v in vecs],
        "has_nan": [bool(np.isnan(v).any()) for v in vecs],
        "known_item": vectors[C.ITEM_ID].astype(str).isin(catalog_ids).to_numpy()})
