"""The package's layers as drawn in docs/layout.md: every import of a vrec module points
down (or stays inside its own unit), vrec/core imports nothing but numpy, pandas, scipy,
the standard library and the pure leaves, and vrec/io imports neither the stages nor the
Spark adapters. Checked on the source (every import statement, lazy ones included)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a module may import from a lower layer or its own unit
LAYERS: dict[str, int] = {
    "vrec.columns": 0,
    "vrec.stages": 0,  # the registry: declarations only, no vrec import (the config
    # checks per-stage settings against its names)
    "vrec.schemas": 1, "vrec.dates": 1, "vrec.config": 1, "vrec.progress": 1,
    "vrec.core": 2, "vrec.images": 2,
    "vrec.io": 3,
    "vrec.data": 4, "vrec.spark": 4, "vrec.gate": 4, "vrec.privacy": 4,
    "vrec.report": 5,
    "vrec.stages.*": 6,  # the stage modules
    "vrec.executor": 7, "vrec.status": 7, "vrec.docgen": 7, "vrec.airflow": 7,
    "vrec.demo": 8,
    "vrec.cli": 9,
}
# vrec/core: numpy and pandas, plus the numeric kernels it wraps (implicit's ALS, FAISS,
# LightGBM's boosting and lleaves/llvmlite compiling its trees, torch only to find CUDA);
# no Spark, no storage, no Airflow, no GX
PURE_CORE = {"numpy", "pandas", "scipy", "threadpoolctl", "implicit", "faiss", "lightgbm",
             "lleaves", "llvmlite", "torch", "vrec"}


def unit(module: str) -> str:
    """The layer unit of a module name (``vrec.stages.train_cf`` -> ``vrec.stages.*``)."""
    if module.startswith("vrec.stages."):
        return "vrec.stages.*"
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, ``from vrec import x`` as ``vrec.x``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vrec":
                out += [(node.lineno, f"vrec.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


SOURCES = sorted((ROOT / "vrec").rglob("*.py"))


def test_every_module_has_a_layer():
    missing = {unit(module_of(p)) for p in SOURCES} - set(LAYERS) - {"vrec"}
    assert not missing, f"add these to LAYERS (tests/test_layers.py): {sorted(missing)}"


def test_imports_point_down():
    upward = []
    for p in SOURCES:
        me = unit(module_of(p))
        if me == "vrec":
            continue
        for line, mod in imports(p):
            if not mod.startswith("vrec.") or unit(mod) == me:
                continue
            if LAYERS[unit(mod)] >= LAYERS[me]:
                upward.append(f"{p.relative_to(ROOT)}:{line} ({me}, layer {LAYERS[me]}) "
                              f"imports {mod} (layer {LAYERS[unit(mod)]})")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_core_is_pure_and_io_has_no_spark_or_stages():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for p in SOURCES:
        me = module_of(p)
        for line, mod in imports(p):
            top = mod.split(".")[0]
            if me.startswith("vrec.core") and top not in stdlib | PURE_CORE:
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {mod}")
            if me.startswith("vrec.io") and (mod.startswith(("vrec.spark", "vrec.stages"))
                                             or top == "pyspark"):
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_checks_see_imports():
    # the scanner sees lazy imports inside functions and `from vrec import x`
    found = {m for p in SOURCES for _, m in imports(p)}
    assert {"vrec.spark.session", "vrec.schemas", "vrec.stages"} <= found
    assert unit("vrec.stages.publish") == "vrec.stages.*" and unit("vrec.stages") == "vrec.stages"
