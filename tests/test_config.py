from pathlib import Path

import pytest

from vrec.config import ConfigError, Settings, load_settings


def test_defaults_load_without_file():
    s = load_settings(environ={})
    assert s.cf.factors == 64 and s.recs.k == 10
    assert s.embed.backbone == "efficientnet_lite0"
    assert s.paths.warehouse_root.is_absolute()


def test_yaml_relative_paths_resolve_against_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = tmp_path / "sub" / "c.yaml"
    cfg.write_text("paths:\n  raw_root: r\n  warehouse_root: /abs/wh\n"
                   "  image_roots: [photos, /abs/img]\ncf:\n  factors: 8\n")
    s = load_settings(cfg, environ={})
    assert s.paths.raw_root == (tmp_path / "sub" / "r").resolve()
    assert s.paths.warehouse_root == Path("/abs/wh")
    assert s.paths.image_roots == [(tmp_path / "sub" / "photos").resolve(), Path("/abs/img")]
    assert s.cf.factors == 8
    assert s.cf.iterations == Settings().cf.iterations  # untouched keys keep defaults


def test_env_overrides_win_and_are_typed(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cf:\n  factors: 8\n")
    s = load_settings(cfg, environ={"VREC__CF__FACTORS": "32", "VREC__RECS__VISUAL_WEIGHT": "0.5",
                                    "VREC__SPARK__MASTER": "spark://h:7077"})
    assert s.cf.factors == 32 and isinstance(s.cf.factors, int)
    assert s.recs.visual_weight == 0.5
    assert s.spark.master == "spark://h:7077"


def test_vrec_config_env_names_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recs:\n  k: 7\n")
    assert load_settings(environ={"VREC_CONFIG": str(cfg)}).recs.k == 7


@pytest.mark.parametrize("text, match", [
    ("cf:\n  factorz: 3\n", "factorz"),
    ("cf:\n  factors: -1\n", "factors"),
    ("- a list\n", "mapping"),
])
def test_invalid_config_is_a_clear_error(tmp_path, text, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, environ={})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_every_setting_is_documented():
    """docs/configuration.md is generated from the docstrings (its staleness:
    tests/test_docs.py)."""
    from pathlib import Path

    from vrec.config import Settings

    page = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    for name, field in Settings.model_fields.items():  # every key documented
        for key, f in field.annotation.model_fields.items():
            assert f.description, f"{name}.{key} has no docstring in vrec/config.py"
            assert f"`{name}.{key}`" in page.read_text()


def test_spark_settings_per_stage_override_the_common_ones_and_name_known_stages():
    from vrec.config import SparkSettings

    s = SparkSettings(conf={"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "4"},
                      stage_conf={"candidates": {"spark.driver.memory": "2g"}})
    assert s.for_stage("candidates").conf == {"spark.driver.memory": "2g",
                                              "spark.sql.shuffle.partitions": "4"}
    assert s.for_stage("build_recs").conf["spark.driver.memory"] == "6g"
    with pytest.raises(ValueError, match="unknown stage.*candidatez"):
        SparkSettings(stage_conf={"candidatez": {"spark.driver.memory": "2g"}})
