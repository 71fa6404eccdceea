"""vrec's Great Expectations File Data Context (``expectations/`` at the repo root).

Committed: ``great_expectations.yml`` (two data sources, ``vrec_pandas`` and
``vrec_spark``, each with one dataframe asset per suite), ``expectations/<suite>.json``
(the suites: the files you edit) and ``validation_definitions/<suite>__<engine>.json``
(each suite bound to its asset on each engine: one suite definition serves both).
``uncommitted/`` is ignored. Validation results and Data Docs go to the warehouse
(``<warehouse>/reports/gx/``): the yml's stores read ``${VREC_GX_RESULTS}``, which
:func:`open_context` sets.

After adding a suite file, register it: ``.venv/bin/python -m vrec.io.gxcontext``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CONTEXT_DIR = Path(__file__).resolve().parents[2] / "expectations"
RESULTS_ENV = "VREC_GX_RESULTS"
SUITES = ("raw_events", "raw_catalog", "item_embeddings", "user_recs", "user_lists",
          "item_similar")
ENGINES = {"pandas": "vrec_pandas", "spark": "vrec_spark"}  # engine -> data source


def definition_name(suite: str, engine: str) -> str:
    """The validation definition that runs ``suite`` on ``engine``."""
    return f"{suite}__{engine}"


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


_CONTEXTS: dict[str, object] = {}
_PREWARM: list[threading.Thread] = []


def prewarm() -> None:
    """Start importing Great Expectations in a background thread. The import takes 5-7 s
    of Python on this project's machines; a validation stage starts it before its Spark
    session, so it runs while the JVM starts and the first Spark jobs run.
    :func:`open_context` waits for it (a failed import fails there, as without it)."""
    if not _PREWARM:
        t = threading.Thread(target=_quiet_import, name="vrec-gx-import", daemon=True)
        _PREWARM.append(t)
        t.start()


def _quiet_import() -> None:
    try:
        _gx()
    except Exception:  # open_context imports again and raises it where it is handled
        pass


def open_context(results_dir: str | Path):
    """The File Data Context, with results and Data Docs under ``results_dir`` (opened
    once per process and results folder: GX is imported and configured once)."""
    key = str(Path(results_dir).resolve())
    if key in _CONTEXTS:
        os.environ[RESULTS_ENV] = key
        return _CONTEXTS[key]
    for t in _PREWARM:
        t.join()
    gx = _gx()
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    os.environ[RESULTS_ENV] = key
    ctx = gx.get_context(mode="file", context_root_dir=str(CONTEXT_DIR))
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic
        pass
    _CONTEXTS[key] = ctx
    return ctx


def register_suites(results_dir: str | Path = CONTEXT_DIR / "uncommitted") -> list[str]:
    """Make every suite file known to the context on both engines: its asset on each
    data source, a whole-dataframe batch definition, and one validation definition per
    engine (:func:`definition_name`)."""
    gx = _gx()
    ctx = open_context(results_dir)
    for name in ENGINES.values():
        if name not in [d.name for d in ctx.data_sources.all().values()]:
            (ctx.data_sources.add_pandas if name == ENGINES["pandas"]
             else ctx.data_sources.add_spark)(name)
    done = []
    for suite_name in SUITES:
        suite = ctx.suites.get(suite_name)
        for engine, source_name in ENGINES.items():
            source = ctx.data_sources.get(source_name)
            try:
                asset = source.get_asset(suite_name)
            except LookupError:
                asset = source.add_dataframe_asset(suite_name)
            try:
                bd = asset.get_batch_definition("whole")
            except (KeyError, LookupError):
                bd = asset.add_batch_definition_whole_dataframe("whole")
            vd = gx.ValidationDefinition(name=definition_name(suite_name, engine), data=bd,
                                         suite=suite)
            ctx.validation_definitions.add_or_update(vd)
            done.append(vd.name)
    # definitions of an earlier layout (one engine per suite, named after the suite)
    for old in SUITES:
        try:
            ctx.validation_definitions.delete(old)
        except Exception:  # not there: nothing to remove
            pass
    return done


if __name__ == "__main__":
    print("registered:", ", ".join(register_suites()))
