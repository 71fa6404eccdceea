"""The quality gate before publish (docs/evaluation.md "Quality gate").

Publish refuses a run whose NDCG@``gate_k`` over all test users, of the model that ranked
its lists (``ranker`` when the learned ranker did, else ``hybrid``), is more than
``eval.gate_max_drop`` (absolute) below that of the model the last published run
published: the latest
published ds <= the run's ds (a rerun of a published ds compares with the version it
would replace) whose ``eval_metrics`` were measured with the same split. Two different
days are measured on different test users, so there the drop must also exceed
``eval.gate_noise_z`` standard errors of the difference (sqrt(se1² + se2²), from the
``ndcg_se`` rows): small holdouts are noisy and a gate that fires on noise gets
overridden by habit. ``gate_noise_z: 0`` turns that off. A run (or the compared run) with
fewer than ``eval.gate_min_users`` test users is not compared (``too_few_users``: passes
with a warning). The first run passes; a run whose metric could not be measured (no test
users in the holdout) passes with a warning; an operator can override a refusal (DAG param
``override_quality_gate`` with ``override_reason``), which is logged and recorded in the
manifest and run_stats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vrec.config import EvalSettings
from vrec.io import warehouse as W

GATE_MODEL, GATE_SLICE, GATE_METRIC = "hybrid", "all", "ndcg"


class QualityGateError(RuntimeError):
    """Raised when publish refuses a run because its quality dropped; nothing published
    was changed."""


def gate_value(metrics: pd.DataFrame, k: int, metric: str = GATE_METRIC,
               model: str = GATE_MODEL) -> float | None:
    """``model``'s NDCG@k (or ``metric``) over all users from an eval_metrics frame (None
    when absent)."""
    if metrics is None or metrics.empty:
        return None
    m = metrics[(metrics["model"] == model) & (metrics["slice"] == GATE_SLICE)
                & (metrics["k"].astype(int) == int(k)) & (metrics["metric"] == metric)]
    return float(m["value"].iloc[0]) if len(m) else None


def previous_run(warehouse: str | Path, ds: str, k: int, split: str | None,
                 min_users: int = 0) -> tuple[str, float, float] | None:
    """(ds, gate value, its standard error) of the latest published run on or before
    ``ds`` measured with ``split`` on at least ``min_users`` test users; the value is
    that of the model the run published (its gate's ``model``; hybrid before)."""
    for prev in sorted((d for d in W.published_ds(warehouse) if d <= ds), reverse=True):
        man = W.manifest(warehouse, prev)
        ev = (man.get("evaluation") or {})
        model = (man.get("quality_gate") or {}).get("model") or GATE_MODEL
        if split is not None and ev.get("split") not in (None, split):
            continue
        try:
            metrics = W.read_table(warehouse, "eval_metrics", prev)
        except FileNotFoundError:  # published before evaluation existed
            continue
        value = gate_value(metrics, k, model=model)
        if (gate_value(metrics, k, "users", model) or min_users) < min_users:
            continue
        if value is not None:
            return prev, value, gate_value(metrics, k, f"{GATE_METRIC}_se", model) or 0.0
    return None


def quality_gate(warehouse: str | Path, ds: str, metrics: pd.DataFrame, ev: EvalSettings, *,
                 split: str | None, override: bool = False, reason: str = "",
                 model: str = GATE_MODEL) -> dict:
    """The gate's verdict for a run: ``status`` is ``passed``, ``first_run``,
    ``not_measured``, ``off``, ``overridden`` or ``refused`` (only ``refused`` stops
    publish), with both values, the drop, the tolerance and a message. ``model``: the
    model that ranked the lists to publish (``ranker`` or ``hybrid``); it is judged
    against the model the last published run published."""
    k = ev.gate_k
    what = f"{model} NDCG@{k} (all users)"
    current = gate_value(metrics, k, model=model)
    out = {"metric": what, "model": model, "current": current, "previous": None,
           "previous_ds": None,
           "drop": None, "max_drop": ev.gate_max_drop, "override": bool(override),
           "reason": reason or None, "split": split}
    if not ev.gate:
        return {**out, "status": "off", "message": "quality gate off (eval.gate: false)"}
    if current is None:
        return {**out, "status": "not_measured",
                "message": f"quality gate: {what} could not be measured for {ds} (no test users "
                           "in the holdout); publishing without a comparison"}
    users = gate_value(metrics, k, "users", model)
    if users is not None and users < ev.gate_min_users:
        return {**out, "status": "too_few_users",
                "message": f"quality gate: {what} = {current:.4f} measured on {int(users)} test "
                           f"users < eval.gate_min_users {ev.gate_min_users}: too few to compare; "
                           "publishing without a comparison"}
    prev = previous_run(warehouse, ds, k, split, ev.gate_min_users)
    if prev is None:
        return {**out, "status": "first_run",
                "message": f"quality gate: {what} = {current:.4f}; no earlier published run "
                           "to compare with: passes"}
    drop = prev[1] - current
    same_day = prev[0] == ds
    noise = 0.0 if same_day else float(np.hypot(gate_value(metrics, k, f"{GATE_METRIC}_se",
                                                           model) or 0.0,
                                                prev[2]))
    out.update(previous_ds=prev[0], previous=prev[1], drop=drop, noise_se=noise,
               noise_z=ev.gate_noise_z)
    both = (f"{what} = {current:.4f} for {ds} vs {prev[1]:.4f} for the last published run "
            f"{prev[0]}{' (the version this run would replace)' if same_day else ''} "
            f"(drop {drop:+.4f}; allowed: eval.gate_max_drop {ev.gate_max_drop}"
            + ("" if same_day or not ev.gate_noise_z else
               f" and {ev.gate_noise_z:g} x SE of the difference = {ev.gate_noise_z * noise:.4f}")
            + ")")
    if drop <= ev.gate_max_drop or (not same_day and drop <= ev.gate_noise_z * noise):
        return {**out, "status": "passed", "message": f"quality gate passed: {both}"}
    if override:
        return {**out, "status": "overridden",
                "message": f"quality gate OVERRIDDEN by the operator (reason: {reason or 'none given'}): "
                           f"{both}"}
    return {**out, "status": "refused",
            "message": f"quality gate refused to publish {ds}: {both}. Nothing published was "
                       "changed. To publish anyway, trigger the run with the params "
                       "override_quality_gate=true and override_reason='...' (or `vrec run-stage "
                       "publish --ds ... --override-quality-gate --override-reason ...`)."}
