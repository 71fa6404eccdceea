"""Great Expectations gates. GX is imported lazily, inside the functions.

Suites are declarative JSON files in ``expectations/`` (one per table). Each expectation
carries ``meta.severity``: ``critical`` failures fail the task; ``warning`` failures are
recorded. String kwargs that start with ``$`` are filled from run parameters (for
example ``$catalog_item_ids``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """A critical expectation failed; the message names each with its observed value."""


@dataclass
class SuiteResult:
    """Outcome of one suite on one table."""

    suite: str
    success: bool
    failures: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    evaluated: int = 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"suite": self.suite, "success": self.success, "evaluated": self.evaluated,
                "failures": self.failures, "warnings": self.warnings}


def load_suite(name: str, params: dict, suites_dir: Path = SUITES_DIR) -> dict:
    """Read ``<name>.json`` and substitute ``$param`` kwargs."""
    path = suites_dir / f"{name}.json"
    spec = json.loads(path.read_text())
    for exp in spec["expectations"]:
        for key, value in list(exp["kwargs"].items()):
            if isinstance(value, str) and value.startswith("$"):
                pname = value[1:]
                if pname not in params:
                    raise KeyError(f"suite {name}: parameter {value} not supplied")
                v = params[pname]
                exp["kwargs"][key] = sorted(v) if isinstance(v, (set, frozenset)) else v
    return spec


def _observed(result: dict) -> str:
    if "observed_value" in result:
        return str(result["observed_value"])
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list") or []
        return (f"{result['unexpected_count']} unexpected "
                f"({result.get('unexpected_percent', 0):.2f}%), e.g. {sample[:3]}")
    return "column or table missing" if not result else json.dumps(result, default=str)[:200]


def validate_frame(df: pd.DataFrame, suite_name: str, params: dict | None = None) -> SuiteResult:
    """Run one suite on a pandas DataFrame with GX's pandas engine."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    spec = load_suite(suite_name, params or {})
    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic
        pass
    suite = ctx.suites.add(gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"]))
    asset = ctx.data_sources.add_pandas(f"pandas_{suite_name}").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": df})
    res = batch.validate(suite)
    out = SuiteResult(suite=suite_name, success=True, evaluated=len(res.results))
    for r in res.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items()
                  if k != "batch_id" and not (isinstance(v, list) and len(v) > 10)}
        rec = {"expectation": cfg.type, "kwargs": kwargs, "observed": _observed(r.result or {}),
               "severity": (cfg.meta or {}).get("severity", "critical")}
        if rec["severity"] == "critical":
            out.success = False
            out.failures.append(rec)
        else:
            out.warnings.append(rec)
    return out


def raise_on_failure(results: list[SuiteResult]) -> None:
    """Raise ValidationFailed naming every failed critical expectation."""
    lines = [f"{r.suite}: {f['expectation']} {f['kwargs']} -> observed {f['observed']}"
             for r in results for f in r.failures]
    if lines:
        raise ValidationFailed("critical expectations failed:\n  " + "\n  ".join(lines))
