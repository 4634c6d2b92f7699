import dataclasses
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ulv_spark.config import ConfigError, SourceConf, load_config

REPO = Path(__file__).resolve().parents[2]


def test_local_conf_loads_with_absolute_paths():
    cfg = load_config(REPO / "conf" / "local.yaml")
    assert cfg.spark.master == "local[2]"
    assert Path(cfg.lakehouse.root).is_absolute()
    assert cfg.run.as_of == dt.date(2025, 10, 1)
    assert cfg.train.use_gpu is False


def test_databricks_conf_loads_with_managed_tables_and_gpu():
    cfg = load_config(REPO / "conf" / "databricks.yaml")
    assert cfg.lakehouse.root is None and cfg.lakehouse.catalog == "main"
    assert cfg.train.use_gpu is True and cfg.train.local_mode is False
    assert cfg.sources.orders.line_level is True
    assert cfg.lakehouse.shared_dir == "/Volumes/main/ulv/shared"


def test_config_is_frozen():
    cfg = load_config(REPO / "conf" / "local.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.horizon_days = 3


def test_unknown_key_names_key_and_file(write_conf):
    path = write_conf("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: unknown key 'train\.epochz'"):
        load_config(path)


def test_the_removed_gate_reject_threshold_says_what_to_use(write_conf):
    with pytest.raises(ConfigError, match=r"conf\.yaml: 'gates\.max_reject_share' was removed: use "
                                          r"ingest\.max_reject_share \(one reject threshold"):
        load_config(write_conf("gates:\n  max_reject_share: 0.1\n  max_score_psi: 0.3\n"))
    with pytest.raises(ConfigError, match=r"\(with --set overrides\): 'gates\.max_reject_share' was removed"):
        load_config(write_conf("{}\n", "empty.yaml"), ["gates.max_reject_share=0.1"])
    assert load_config(write_conf("ingest:\n  max_reject_share: 0.1\n", "ok.yaml")).ingest.max_reject_share == 0.1


def test_wrong_type_names_key(write_conf):
    path = write_conf("train:\n  epochs: three\n")
    with pytest.raises(ConfigError, match=r"'train\.epochs' must be an integer, got 'three'"):
        load_config(path)


def test_bool_is_not_an_integer(write_conf):
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(write_conf("train:\n  epochs: true\n"))


def test_missing_required_key_in_source(write_conf):
    # a literal that is not one of the allowed formats
    with pytest.raises(ConfigError, match=r"'sources\.orders\.format' must be one of"):
        load_config(write_conf("sources:\n  orders:\n    format: xlsx\n"))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_yaml_reports_line(write_conf):
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+\)"):
        load_config(write_conf("run:\n  horizon_days: [1,\nx: {\n"))


def test_overrides_are_typed_and_checked(write_conf):
    path = write_conf("run:\n  horizon_days: 30\n")
    cfg = load_config(path, ["run.horizon_days=60", "run.as_of=2024-05-01", "spark.extra={a: b}"])
    assert cfg.run.horizon_days == 60 and cfg.run.as_of == dt.date(2024, 5, 1)
    assert cfg.spark.extra == {"a": "b"}
    with pytest.raises(ConfigError, match=r"with --set overrides\): 'run\.horizon_days' must be an integer"):
        load_config(path, {"run.horizon_days": "x"})


def test_extends_deep_merges(write_conf):
    write_conf("train:\n  epochs: 9\n  batch_size: 8\n", name="base.yaml")
    cfg = load_config(write_conf("extends: base.yaml\ntrain:\n  epochs: 2\n"))
    assert (cfg.train.epochs, cfg.train.batch_size) == (2, 8)


BASE_SOURCE = ("sources:\n  orders:\n    format: parquet\n    path: /raw/orders\n"
               "    columns: {user_id: customer_id, order_id: order_no, order_ts: ordered_at, amount: order_total,\n"
               "              discount: discount_total, is_return: is_cancellation}\n"
               "    timestamp_format: \"yyyy-MM-dd'T'HH:mm:ss\"\n    future_rows: defer\n")


def test_extends_replaces_a_sources_columns_instead_of_merging_them(write_conf):
    write_conf(BASE_SOURCE, name="base.yaml")
    cfg = load_config(write_conf("extends: base.yaml\nsources:\n  orders:\n    path: /raw/lines\n"
                                 "    columns: {user_id: c, order_id: o, order_ts: t, amount: a}\n"))
    orders = cfg.sources.orders
    assert orders.columns == {"user_id": "c", "order_id": "o", "order_ts": "t", "amount": "a"}
    # same format: the other keys of the source still merge
    assert (orders.format, orders.path, orders.timestamp_format, orders.future_rows) == (
        "parquet", "/raw/lines", "yyyy-MM-dd'T'HH:mm:ss", "defer")


def test_extends_replaces_the_whole_source_when_its_format_changes(write_conf):
    write_conf(BASE_SOURCE, name="base.yaml")
    cfg = load_config(write_conf("extends: base.yaml\nsources:\n  orders:\n    format: csv\n    path: /raw/o.csv\n"
                                 "    columns: {user_id: c, order_id: o, order_ts: t, amount: a}\n"))
    orders = cfg.sources.orders
    assert orders == SourceConf(format="csv", path="/raw/o.csv",
                                columns={"user_id": "c", "order_id": "o", "order_ts": "t", "amount": "a"})


def test_a_source_without_columns_keeps_the_base_mapping_and_set_edits_one_key(write_conf):
    write_conf(BASE_SOURCE, name="base.yaml")
    cfg = load_config(write_conf("extends: base.yaml\nsources:\n  orders:\n    path: /raw/other\n"),
                      ["sources.orders.columns.amount=net"])
    assert cfg.sources.orders.columns == {"user_id": "customer_id", "order_id": "order_no", "order_ts": "ordered_at",
                                          "amount": "net", "discount": "discount_total",
                                          "is_return": "is_cancellation"}


def test_a_null_column_mapping_says_how_to_drop_it(write_conf):
    write_conf(BASE_SOURCE, name="base.yaml")
    with pytest.raises(ConfigError, match=r"'sources\.orders\.columns\.discount' must not be empty: a source's "
                                          r"columns replace the base file's, so restate them without 'discount'"):
        load_config(write_conf("extends: base.yaml\nsources:\n  orders:\n    columns: {discount: null}\n"))


@pytest.mark.parametrize("path", sorted((REPO / "conf" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_sources_map_exactly_the_columns_they_name(path):
    """An example that extends local.yaml inherits none of the demo's column names."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = load_config(path)
    for table, source in raw["sources"].items():
        loaded = getattr(cfg.sources, table)
        if source is None:
            assert loaded is None, table
            continue
        assert loaded.columns == source.get("columns", {}), table
        assert loaded.format == source["format"], table


def test_run_date_defaults(write_conf):
    cfg = load_config(write_conf("{}\n"))
    assert cfg.run_date(dt.date(2020, 1, 2)) == dt.date(2020, 1, 2)
    assert cfg.run_date() == dt.datetime.now(dt.timezone.utc).date()


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochz: 3\n", "unknown key 'train.epochz'"),
    ("spark:\n  shuffle_partitions: many\n", "'spark.shuffle_partitions' must be an integer"),
])
def test_cli_bad_conf_is_one_line_exit_2(write_conf, text, message):
    path = write_conf(text)
    proc = subprocess.run([sys.executable, "-m", "ulv_spark.cli", "tables", "--conf", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_missing_conf_file_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ulv_spark.cli", "tables", "--conf", str(tmp_path / "x.yaml")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_moving_the_lakehouse_moves_every_default_path(write_conf, tmp_path):
    cfg = load_config(REPO / "conf" / "local.yaml", [f"lakehouse.root={tmp_path / 'lh'}"])
    assert cfg.lakehouse.shared_dir == str(tmp_path / "lh" / "_shared")
    assert cfg.train.model_dir == str(tmp_path / "lh" / "_shared" / "models")
    assert cfg.generate.output_dir == str(tmp_path / "lh" / "raw")
    assert cfg.sources.orders.path == str(tmp_path / "lh" / "raw" / "orders")
    explicit = load_config(write_conf("lakehouse: {root: /a}\ntrain: {model_dir: /b/models}\n"))
    assert explicit.train.model_dir == "/b/models" and explicit.lakehouse.shared_dir == "/a/_shared"


def test_source_bounds_load_from_yaml_and_are_checked(write_conf):
    cfg = load_config(write_conf("sources:\n  orders:\n    path: /x.csv\n    max_abs_amount: 1e6\n"
                                 "    min_date: 2000-01-01\n"))
    assert (cfg.sources.orders.max_abs_amount, cfg.sources.orders.min_date) == (1e6, dt.date(2000, 1, 1))
    assert cfg.sources.orders.max_date == dt.date(2099, 12, 31)
    with pytest.raises(ConfigError, match=r"min_date \(2100-01-01\) must be before its max_date"):
        load_config(write_conf("sources:\n  orders:\n    path: /x.csv\n    min_date: 2100-01-01\n"))
