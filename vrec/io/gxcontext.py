"""vrec's Great Expectations File Data Context (``expectations/`` at the repo root).

Committed: ``great_expectations.yml`` (two data sources, ``vrec_pandas`` and
``vrec_spark``, each with one dataframe asset per suite), ``expectations/<suite>.json``
(the suites: the files you edit) and ``validation_definitions/<suite>.json`` (each suite
bound to the asset of its engine). ``uncommitted/`` is ignored. Validation results and
Data Docs go to the warehouse (``<warehouse>/reports/gx/``): the yml's stores read
``${VREC_GX_RESULTS}``, which :func:`open_context` sets.

After adding a suite file, register it: ``.venv/bin/python -m vrec.io.gxcontext``.
"""

from __future__ import annotations

import os
from pathlib import Path

CONTEXT_DIR = Path(__file__).resolve().parents[2] / "expectations"
RESULTS_ENV = "VREC_GX_RESULTS"
# engine per suite: Spark for tables that grow with events or users, pandas for per-item ones
SUITE_ENGINES = {"raw_events": "spark", "raw_catalog": "pandas", "item_embeddings": "pandas",
                 "user_recs": "spark", "user_lists": "spark", "item_similar": "spark"}


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


def open_context(results_dir: str | Path):
    """The File Data Context, with results and Data Docs under ``results_dir``."""
    gx = _gx()
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    os.environ[RESULTS_ENV] = str(Path(results_dir).resolve())
    ctx = gx.get_context(mode="file", context_root_dir=str(CONTEXT_DIR))
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic
        pass
    return ctx


def register_suites(results_dir: str | Path = CONTEXT_DIR / "uncommitted") -> list[str]:
    """Make every suite file known to the context: its asset on the engine's data source,
    a whole-dataframe batch definition, and a validation definition named after it."""
    gx = _gx()
    ctx = open_context(results_dir)
    sources = {"pandas": "vrec_pandas", "spark": "vrec_spark"}
    for engine, name in sources.items():
        if name not in [d.name for d in ctx.data_sources.all().values()]:
            (ctx.data_sources.add_pandas if engine == "pandas" else ctx.data_sources.add_spark)(name)
    done = []
    for suite_name, engine in SUITE_ENGINES.items():
        suite = ctx.suites.get(suite_name)
        source = ctx.data_sources.get(sources[engine])
        try:
            asset = source.get_asset(suite_name)
        except LookupError:
            asset = source.add_dataframe_asset(suite_name)
        try:
            bd = asset.get_batch_definition("whole")
        except (KeyError, LookupError):
            bd = asset.add_batch_definition_whole_dataframe("whole")
        vd = gx.ValidationDefinition(name=suite_name, data=bd, suite=suite)
        ctx.validation_definitions.add_or_update(vd)
        done.append(suite_name)
    return done


if __name__ == "__main__":
    print("registered:", ", ".join(register_suites()))
