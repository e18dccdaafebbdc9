"""sync.toml loading, environment overrides, precedence and every exit-2 error."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from core import config as cfg
from core.errors import ConfigError

from .conftest import REPO, run_cli

FIELDS = {"name": {"type": "string", "required": True}}


def build(env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None, **sections: Any) -> cfg.Config:
    raw: dict[str, Any] = {"fields": FIELDS}
    raw.update(sections)
    return cfg.from_dict(raw, env=env or {}, overrides=overrides)


def error_of(**sections: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(**sections)
    return info.value


# -- defaults and the repository's own example -----------------------------------


def test_defaults_follow_the_design():
    c = build()
    assert (c.source.project, c.source.database, c.source.collection) == ("demo-hr", "(default)", "employees")
    assert (c.source.page_size, c.source.updated_field, c.source.emulator_host) == (2000, "", "")
    assert (c.target.url, c.target.table, c.target.id_column) == (
        "sqlite:///employee_sync.db",
        "employees",
        "firestore_id",
    )
    assert (c.target.delete_mode, c.target.batch_size) == ("soft", 500)
    assert (c.sync.enabled, c.sync.interval, c.sync.force_interval, c.sync.cache_timeout, c.sync.mode) == (
        True,
        300,
        3600,
        300,
        "poll",
    )
    assert (c.api.enabled, c.api.host, c.api.port, c.api.token) == (False, "127.0.0.1", 8765, "")
    assert c.interval_source == "default"
    spec = c.fields[0]
    assert (spec.path, spec.type, spec.column, spec.required, spec.max_length) == ("name", "string", "name", True, 255)


def test_the_repository_sync_toml_loads_as_the_employee_example():
    c = cfg.load(str(REPO / "sync.toml"), env={})
    by_path = {f.path: f for f in c.fields}
    for name in ("name", "email", "phone", "department", "position", "status", "salary", "hired_at", "updated_at"):
        assert name in by_path, name
    assert by_path["name"].required and by_path["name"].max_length == 200
    assert by_path["salary"].type == "integer"
    assert by_path["hired_at"].type == "date"
    assert by_path["updated_at"].type == "datetime"
    assert by_path["address.city"].column == "city"
    assert c.source.updated_field == "updated_at"
    assert c.interval_source == "file"


def test_nested_path_column_defaults_to_underscores():
    c = cfg.from_dict({"fields": {"address.city": {}, "a.b.c": {"type": "integer"}}})
    assert [(f.path, f.column, f.parts) for f in c.fields] == [
        ("address.city", "address_city", ("address", "city")),
        ("a.b.c", "a_b_c", ("a", "b", "c")),
    ]


# -- every exit-2 error names its key ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"sorce": {}}, "sorce", "unknown section"),
        ({"source": {"projekt": "x"}}, "source.projekt", "unknown key"),
        ({"target": {"delete": "soft"}}, "target.delete", "unknown key"),
        ({"sync": {"intervall": 60}}, "sync.intervall", "unknown key"),
        ({"api": {"tokn": "x"}}, "api.tokn", "unknown key"),
        ({"fields": {"name": {"typ": "string"}}}, "fields.name.typ", "unknown key"),
        ({"fields": {"name": {"type": "varchar"}}}, "fields.name.type", "unknown type 'varchar'"),
        ({"fields": {"name": {"type": "int"}}}, "fields.name.type", "unknown type 'int'"),
        ({"fields": {"name": {"required": "yes"}}}, "fields.name.required", "true or false"),
        ({"fields": {"name": {"max_length": 0}}}, "fields.name.max_length", "1 to 16383"),
        ({"fields": {"name": {"max_length": "10"}}}, "fields.name.max_length", "whole number"),
        ({"fields": {"bio": {"type": "text", "max_length": 10}}}, "fields.bio.max_length", "string only"),
        ({"fields": {"name": "string"}}, "fields.name", "must be a table"),
        ({"fields": {}}, "fields", "no fields are mapped"),
        ({"sync": {"interval": "300"}}, "sync.interval", "whole number"),
        ({"sync": {"interval": True}}, "sync.interval", "whole number"),
        ({"sync": {"enabled": 1}}, "sync.enabled", "true or false"),
        ({"source": {"page_size": 2000.5}}, "source.page_size", "whole number"),
        ({"source": "x"}, "source", "must be a table"),
        ({"target": {"batch_size": 0}}, "target.batch_size", "from 1"),
        ({"source": {"page_size": 0}}, "source.page_size", "from 1"),
        ({"source": {"project": ""}}, "source.project", "must not be empty"),
        ({"source": {"collection": "a/b"}}, "source.collection", "not a collection path"),
        ({"source": {"emulator_host": "localhost"}}, "source.emulator_host", "host:port"),
        ({"source": {"emulator_host": "localhost:8080\n"}}, "source.emulator_host", "host:port"),
        ({"source": {"emulator_host": "localhost:٨٠٨٠"}}, "source.emulator_host", "host:port"),
        ({"source": {"credentials": "/nonexistent/sa.json"}}, "source.credentials", "file not found"),
        ({"api": {"port": 70000}}, "api.port", "0 to 65,535"),
        ({"sync": {"cache_timeout": -1}}, "sync.cache_timeout", "from 0"),
        ({"sync": {"force_interval": 5}}, "sync.force_interval", "from 10"),
    ],
)
def test_bad_values_name_their_key(raw, key, words):
    raw = {"fields": FIELDS, **raw}
    with pytest.raises(ConfigError) as info:
        cfg.from_dict(raw, env={})
    assert info.value.key == key
    assert f"config error: {key}: " in info.value.message
    assert words in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("target", "table", "my-table"),
        ("target", "table", "1employees"),
        ("target", "table", "t" * 65),
        ("target", "table", "employees; DROP TABLE x"),
        ("target", "id_column", "firestore id"),
        ("target", "id_column", ""),
        ("target", "table", "employees\n"),  # `$` would match before the newline
        ("target", "id_column", "firestore_id\n"),
    ],
)
def test_table_and_id_column_must_be_identifiers(section, key, value):
    exc = error_of(**{section: {key: value}})
    assert exc.key == f"{section}.{key}" and "not an identifier" in exc.message


def test_identifier_boundaries_are_accepted():
    c = build(target={"table": "_" + "t" * 63, "id_column": "Doc_ID_1"})
    assert c.target.table == "_" + "t" * 63


def test_the_empsync_prefix_is_reserved():
    assert error_of(target={"table": "EMPSYNC_runs"}).key == "target.table"


@pytest.mark.parametrize("column", ["bad-name", "2fast", "x" * 65, "naïve", "a b", "name\n"])
def test_a_bad_column_name_names_the_column_key(column):
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"name": {"column": column}}})
    assert info.value.key == "fields.name.column" and "not an identifier" in info.value.message


def test_a_field_path_that_makes_no_identifier_asks_for_a_column():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"first name": {}}})
    # Named the way it is written in TOML, quoted, with the way out.
    assert info.value.key == 'fields."first name"'
    assert "column" in info.value.hint
    assert cfg.from_dict({"fields": {"first name": {"column": "first_name"}}}).fields[0].column == "first_name"


def test_an_empty_path_segment_is_refused():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"address..city": {"column": "city"}}})
    assert info.value.key == 'fields."address..city"'


BAD_FIELD_PATHS = [
    ("a..b", "empty segment"),
    (".a", "empty segment"),
    ("a.", "empty segment"),
    ("__name__", "reserves"),
    ("meta.__x__", "reserves"),
    ("é" * 751, "1,500 bytes"),  # 1,502 bytes in UTF-8
]


@pytest.mark.parametrize(("path", "words"), BAD_FIELD_PATHS)
def test_field_paths_firestore_refuses_are_config_errors(path, words):
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {path: {"column": "c"}}})
    assert info.value.key == cfg.field_key(path) and words in info.value.message
    exc = error_of(source={"updated_field": path})
    assert exc.key == "source.updated_field" and words in exc.message and exc.exit_code == 2


def test_field_paths_at_firestores_limits_are_accepted():
    for path in ("a.b_c.d", "__x", "x__", "_", "é" * 750):
        assert build(source={"updated_field": path}).source.updated_field == path


def test_two_fields_on_one_column_name_the_second_field():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"name": {}, "full.name": {"column": "name"}}})
    assert info.value.key == 'fields."full.name"'
    assert "also used by fields.name" in info.value.message


def test_two_fields_on_one_column_ignore_case():
    # MySQL column names are case-insensitive: Name and name are one column.
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"name": {}, "other": {"column": "Name"}}})
    assert info.value.key == "fields.other"


@pytest.mark.parametrize("column", ["firestore_id", "firestore_update_time", "synced_at", "deleted_at", "content_hash"])
def test_a_column_clashing_with_bookkeeping_is_refused(column):
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"name": {}, "x.y": {"column": column}}})
    assert info.value.key == 'fields."x.y"'
    assert "bookkeeping" in info.value.message


def test_a_field_named_like_a_bookkeeping_column_clashes_too():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"fields": {"synced_at": {"type": "datetime"}}})
    assert info.value.key == "fields.synced_at"


def test_a_custom_id_column_is_reserved_and_the_default_one_freed():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({"target": {"id_column": "emp_id"}, "fields": {"EMP_ID": {}}})
    assert info.value.key == "fields.EMP_ID"
    c = cfg.from_dict({"target": {"id_column": "emp_id"}, "fields": {"firestore_id": {}}})
    assert c.fields[0].column == "firestore_id"


@pytest.mark.parametrize("mode", ["SOFT", "delete", "", "archive"])
def test_bad_delete_mode(mode):
    exc = error_of(target={"delete_mode": mode})
    assert exc.key == "target.delete_mode" and "soft, hard, keep" in exc.message


@pytest.mark.parametrize("mode", ["stream", "Poll", ""])
def test_bad_sync_mode(mode):
    exc = error_of(sync={"mode": mode})
    assert exc.key == "sync.mode" and "poll or listen" in exc.message


@pytest.mark.parametrize("scope", ["all", "Collection", ""])
def test_bad_listen_scope(scope):
    exc = error_of(sync={"listen_scope": scope})
    assert exc.key == "sync.listen_scope" and "changes or collection" in exc.message


@pytest.mark.parametrize("mode", ["soft", "hard", "keep"])
def test_every_delete_mode_is_accepted(mode):
    assert build(target={"delete_mode": mode}).target.delete_mode == mode


@pytest.mark.parametrize(
    ("value", "ok"), [(9, False), (10, True), (300, True), (86_400, True), (86_401, False), (0, False), (-5, False)]
)
def test_interval_bounds(value, ok):
    if ok:
        assert build(sync={"interval": value}).sync.interval == value
    else:
        exc = error_of(sync={"interval": value})
        assert exc.key == "sync.interval" and "10 to 86,400" in exc.message


def test_check_interval_is_the_same_rule_for_the_cli():
    assert cfg.check_interval(10) == 10 and cfg.check_interval(86_400) == 86_400
    for bad in (9, 86_401):
        with pytest.raises(ConfigError) as info:
            cfg.check_interval(bad)
        assert info.value.key == "interval"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "not a database URL"),
        ("", "not a database URL"),
        ("oracle://u:pw@localhost/db", "unsupported database 'oracle'"),
        ("mssql+pyodbc://u:pw@dsn", "unsupported database 'mssql'"),
        ("mysql+mysqldb://u:pw@localhost/db", "driver 'mysqldb'"),
        ("postgresql+psycopg2://u:pw@localhost/db", "driver 'psycopg2'"),
        ("postgresql+psycopg://u:pw@localhost/db?bogus=1", 'invalid connection option "bogus"'),
    ],
)
def test_bad_target_urls(url, words):
    exc = error_of(target={"url": url})
    assert exc.key == "target.url" and words in exc.message


@pytest.mark.parametrize(
    "url",
    [
        "oracle://user:Hunter2pw@localhost/db",
        "postgresql+psycopg2://user:Hunter2pw@localhost/db",
        "nonsense://user:Hunter2pw@host/db",
        "bad url:Hunter2pw@x",
        "mysql+pymysql:/user:Hunter2pw@host/db",  # one slash short: unparsable
        "mysql+pymysql://user:Hunter2pw@host:notaport/db",
        "mysql+pymysql://user:Hun@ter2pw@host:3306/db",  # an unencoded @ in the password
        "mysql+pymysql://user:Hun@ter/2pw@host/db",
    ],
)
def test_a_bad_url_is_a_config_error_that_never_shows_its_password(url):
    exc = error_of(target={"url": url})
    assert exc.key == "target.url" and exc.exit_code == 2
    for part in ("Hunter2pw", "ter2pw", "ter/2pw"):
        assert part not in str(exc), url
    assert "Hunter2pw" not in cfg.mask_url(url)


def test_an_unencoded_at_sign_is_explained():
    exc = error_of(target={"url": "mysql+pymysql://app:P@ssw0rd@db:3306/hr"})
    assert "unencoded @" in exc.message and "%40" in exc.hint
    assert build(target={"url": "mysql+pymysql://app:P%40ssw0rd@db:3306/hr"}).target.url.endswith("@db:3306/hr")
    # A folder with an @ is a fine SQLite path.
    assert build(target={"url": "sqlite:////srv/a@b/mirror.db"})


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///employee_sync.db",
        "sqlite://",
        "mysql+pymysql://u:pw@127.0.0.1:3306/hr",
        "mariadb+pymysql://u@h/db",
        "mysql://u@h/db",  # no driver named: PyMySQL
        "postgresql+psycopg://u:pw@127.0.0.1:5432/hr",
        "postgresql://u@h/db",  # no driver named: psycopg
    ],
)
def test_supported_target_urls(url):
    assert build(target={"url": url}).target.url == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql+pymysql://u:pw@h/db?connect_timeout=abc", "connect_timeout: bad value"),
        ("mysql+pymysql://u:pw@h/db?compress=maybe", "compress: bad value"),
        ("mysql+pymysql://u:pw@h/db?foo=bar", "foo is not an option of the pymysql driver"),
        ("sqlite:///m.db?timeout=soon", "timeout: bad value"),
        ("sqlite:///m.db?foo=bar", "'foo' are not accepted"),
    ],
)
def test_url_options_the_driver_would_refuse_are_config_errors(url, words):
    # Before, each ended at the first connect as "unexpected error … please report it".
    exc = error_of(target={"url": url})
    assert exc.key == "target.url" and words in exc.message and exc.exit_code == 2
    assert "pw" not in exc.message


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://u:pw@h/db?charset=utf8mb4&connect_timeout=3",
        "mysql+pymysql://u:pw@h/db?ssl_ca=/etc/ssl/ca.pem",
        "sqlite:///m.db?timeout=5",
        "sqlite:///file:m.db?mode=ro&uri=true",
    ],
)
def test_url_options_the_driver_takes_are_accepted(url):
    assert build(target={"url": url}).target.url == url


def test_mask_url_hides_the_password():
    assert cfg.mask_url("mysql+pymysql://u:s3cr%40t@h:3306/db") == "mysql+pymysql://u:***@h:3306/db"
    assert "s3cret" not in cfg.mask_url("weird://u:s3cret@h/db")


def test_updated_field_must_be_a_datetime_when_mapped():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict(
            {"source": {"updated_field": "updated_at"}, "fields": {"name": {}, "updated_at": {"type": "date"}}}
        )
    assert info.value.key == "source.updated_field"


# -- environment overrides and precedence ----------------------------------------


@pytest.mark.parametrize(
    ("var", "text", "section", "key", "value"),
    [
        ("FIRESTORE_REALTIME_ENABLED", "false", "sync", "enabled", False),
        ("FIRESTORE_REALTIME_ENABLED", "0", "sync", "enabled", False),
        ("FIRESTORE_REALTIME_ENABLED", "No", "sync", "enabled", False),
        ("FIRESTORE_REALTIME_ENABLED", "TRUE", "sync", "enabled", True),
        ("FIRESTORE_REALTIME_ENABLED", " on ", "sync", "enabled", True),
        ("EMPLOYEE_SYNC_INTERVAL", "60", "sync", "interval", 60),
        ("EMPLOYEE_SYNC_INTERVAL", " 120 ", "sync", "interval", 120),
        ("FIRESTORE_CACHE_TIMEOUT", "900", "sync", "cache_timeout", 900),
        ("EMPSYNC_TARGET_URL", "mysql+pymysql://u:pw@db:3306/hr", "target", "url", "mysql+pymysql://u:pw@db:3306/hr"),
        ("EMPSYNC_API_TOKEN", "tok-123", "api", "token", "tok-123"),
        ("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8080", "source", "emulator_host", "127.0.0.1:8080"),
    ],
)
def test_environment_overrides(var, text, section, key, value):
    c = build(env={var: text})
    assert getattr(getattr(c, section), key) == value


def test_an_empty_environment_variable_is_ignored():
    c = build(env={"EMPLOYEE_SYNC_INTERVAL": "", "EMPSYNC_TARGET_URL": ""}, sync={"interval": 60})
    assert c.sync.interval == 60 and c.target.url == "sqlite:///employee_sync.db"


@pytest.mark.parametrize(
    ("var", "text", "words"),
    [
        ("FIRESTORE_REALTIME_ENABLED", "maybe", "true or false"),
        ("EMPLOYEE_SYNC_INTERVAL", "5m", "whole number"),
        ("FIRESTORE_CACHE_TIMEOUT", "1.5", "whole number"),
        # int() takes these; the mapping and the config do not: ASCII digits only.
        ("EMPLOYEE_SYNC_INTERVAL", "٣٠", "whole number"),
        ("EMPLOYEE_SYNC_INTERVAL", "3_0", "whole number"),
        ("EMPLOYEE_SYNC_INTERVAL", "１２０", "whole number"),
        ("FIRESTORE_CACHE_TIMEOUT", "9" * 5000, "whole number"),
    ],
)
def test_bad_environment_values_name_the_variable(var, text, words):
    with pytest.raises(ConfigError) as info:
        build(env={var: text})
    assert info.value.key == var and words in info.value.message


@pytest.mark.parametrize(
    ("var", "text", "key"),
    [
        ("EMPLOYEE_SYNC_INTERVAL", "5", "sync.interval"),
        ("FIRESTORE_CACHE_TIMEOUT", "-1", "sync.cache_timeout"),
        ("EMPSYNC_TARGET_URL", "oracle://u:pw@h/db", "target.url"),
        ("FIRESTORE_EMULATOR_HOST", "nohost", "source.emulator_host"),
    ],
)
def test_an_out_of_range_environment_value_names_the_variable_and_the_key(var, text, key):
    # The file may be fine: the operator must be told the variable is the culprit.
    with pytest.raises(ConfigError) as info:
        build(env={var: text}, sync={"interval": 300})
    assert var in info.value.message and key in info.value.message
    assert info.value.exit_code == 2


def test_an_out_of_range_command_line_value_says_so():
    with pytest.raises(ConfigError) as info:
        build(overrides={"target.url": "oracle://u:pw@h/db"})
    assert "target.url" in info.value.message and "command line" in info.value.message


def test_precedence_command_line_over_environment_over_file_over_default():
    file_url, env_url, cli_url = "sqlite:///file.db", "sqlite:///env.db", "sqlite:///cli.db"
    assert build().target.url == "sqlite:///employee_sync.db"
    assert build(target={"url": file_url}).target.url == file_url
    assert build(env={"EMPSYNC_TARGET_URL": env_url}, target={"url": file_url}).target.url == env_url
    assert (
        build(
            env={"EMPSYNC_TARGET_URL": env_url}, overrides={"target.url": cli_url}, target={"url": file_url}
        ).target.url
        == cli_url
    )
    # A command-line option that was not given (None) leaves the lower layers alone.
    assert build(env={"EMPSYNC_TARGET_URL": env_url}, overrides={"target.url": None}).target.url == env_url


def test_interval_precedence_and_its_reported_source():
    assert (build().sync.interval, build().interval_source) == (300, "default")
    c = build(sync={"interval": 120})
    assert (c.sync.interval, c.interval_source) == (120, "file")
    c = build(env={"EMPLOYEE_SYNC_INTERVAL": "60"}, sync={"interval": 120})
    assert (c.sync.interval, c.interval_source) == (60, "environment")
    c = build(env={"EMPLOYEE_SYNC_INTERVAL": "60"}, overrides={"sync.interval": 30}, sync={"interval": 120})
    assert (c.sync.interval, c.interval_source) == (30, "command line")


def test_environment_beats_the_file_for_every_variable(tmp_path):
    path = tmp_path / "sync.toml"
    path.write_text(
        """
[source]
emulator_host = "127.0.0.1:1111"
[target]
url = "sqlite:///from-file.db"
[sync]
enabled = true
interval = 120
cache_timeout = 60
[api]
token = "file-token"
[fields.name]
"""
    )
    env = {
        "FIRESTORE_REALTIME_ENABLED": "false",
        "EMPLOYEE_SYNC_INTERVAL": "45",
        "FIRESTORE_CACHE_TIMEOUT": "30",
        "EMPSYNC_TARGET_URL": "sqlite:///from-env.db",
        "EMPSYNC_API_TOKEN": "env-token",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:2222",
    }
    c = cfg.load(str(path), env=env)
    assert (c.sync.enabled, c.sync.interval, c.sync.cache_timeout) == (False, 45, 30)
    assert (c.target.url, c.api.token, c.source.emulator_host) == (
        "sqlite:///from-env.db",
        "env-token",
        "127.0.0.1:2222",
    )
    c = cfg.load(str(path), env={})
    assert (c.sync.enabled, c.sync.interval, c.target.url, c.api.token) == (
        True,
        120,
        "sqlite:///from-file.db",
        "file-token",
    )


def test_config_path_comes_from_the_option_then_empsync_config_then_cwd(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[target]\ntable = "from_a"\n[fields.name]\n')
    b.write_text('[target]\ntable = "from_b"\n[fields.name]\n')
    assert cfg.load(str(a), env={"EMPSYNC_CONFIG": str(b)}).target.table == "from_a"
    assert cfg.load(None, env={"EMPSYNC_CONFIG": str(b)}).target.table == "from_b"
    assert cfg.config_path(None, {}) == Path("sync.toml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[source]\nproject = "recursos-humanos-señor"\n[fields.name]\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        cfg.load(str(latin1), env={})
    assert info.value.key == str(latin1) and "not UTF-8" in info.value.message and "offset" in info.value.message
    _assert_one_clear_error(run_cli("--config", str(latin1), "status"), "not UTF-8")


def test_a_missing_or_broken_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        cfg.load(str(tmp_path / "nope.toml"), env={})
    assert "file not found" in info.value.message
    broken = tmp_path / "broken.toml"
    broken.write_text("[source\n")
    with pytest.raises(ConfigError) as info:
        cfg.load(str(broken), env={})
    assert "not valid TOML" in info.value.message and str(broken) in info.value.message


# -- the command line --------------------------------------------------------------


def _assert_one_clear_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, proc.stderr
    assert lines[0].startswith("empsync: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[sync]\ninterval = 5\n[fields.name]\n", "sync.interval"),
        ("[sync]\nintervall = 60\n[fields.name]\n", "sync.intervall"),
        ("[sorce]\n[fields.name]\n", "sorce"),
        ('[fields.name]\ntype = "varchar"\n', "fields.name.type"),
        ('[fields.name]\n[fields.other]\ncolumn = "name"\n', "fields.other"),
        ('[fields.name]\n[fields.when]\ncolumn = "synced_at"\n', "fields.when"),
        ('[target]\ndelete_mode = "archive"\n[fields.name]\n', "target.delete_mode"),
        ('[target]\nurl = "oracle://u:pw@h/db"\n[fields.name]\n', "target.url"),
        ('[target]\ntable = "bad-name"\n[fields.name]\n', "target.table"),
        ('[sync]\nmode = "push"\n[fields.name]\n', "sync.mode"),
        ("[source\n", "bad.toml"),
    ],
)
def test_cli_bad_config_is_one_line_naming_the_key(tmp_path, body, key):
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    _assert_one_clear_error(run_cli("--config", str(bad), "status"), key)


def test_cli_bad_config_named_after_the_command_too(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync]\ninterval = 5\n[fields.name]\n")
    _assert_one_clear_error(run_cli("status", "--config", str(bad)), "sync.interval")
    _assert_one_clear_error(run_cli("sync", "--json", "--config", str(bad)), "sync.interval")


def test_cli_bad_environment_value_names_the_variable(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'[target]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[fields.name]\n')
    _assert_one_clear_error(
        run_cli("--config", str(good), "status", env={"EMPLOYEE_SYNC_INTERVAL": "3"}), "EMPLOYEE_SYNC_INTERVAL"
    )
    _assert_one_clear_error(
        run_cli("--config", str(good), "status", env={"FIRESTORE_REALTIME_ENABLED": "perhaps"}),
        "FIRESTORE_REALTIME_ENABLED",
    )


@pytest.mark.parametrize("limit", ["99999999999999999999", "0", "100001", "٣", "1_0"])
def test_cli_changes_limit_is_bounded(tmp_path, limit):
    good = tmp_path / "good.toml"
    good.write_text(f'[target]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[fields.name]\n')
    proc = run_cli("--config", str(good), "changes", "--limit", limit)
    assert proc.returncode == 2 and "--limit" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "unexpected error" not in proc.stderr


def test_cli_missing_config_file(tmp_path):
    _assert_one_clear_error(run_cli("--config", str(tmp_path / "missing.toml"), "status"), "file not found")
    _assert_one_clear_error(
        run_cli("status", env={"EMPSYNC_CONFIG": str(tmp_path / "missing.toml")}), "missing.toml", "file not found"
    )


def _tables_of(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_cli_config_before_and_after_the_command(tmp_path):
    for n, placement in enumerate(("before", "after")):
        db = tmp_path / f"mirror{n}.db"
        path = tmp_path / f"c{n}.toml"
        path.write_text(f'[target]\nurl = "sqlite:///{db}"\ntable = "staff"\n[fields.name]\n')
        args = (
            ["--config", str(path), "rejects", "--json"]
            if placement == "before"
            else ["rejects", "--json", "--config", str(path)]
        )
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[]"
        # The config was really used: its database holds its table.
        assert {"staff", "empsync_rejects", "empsync_state"} <= _tables_of(db), placement


def test_cli_empsync_config_environment_variable(tmp_path):
    db = tmp_path / "m.db"
    path = tmp_path / "env.toml"
    path.write_text(f'[target]\nurl = "sqlite:///{db}"\n[fields.name]\n')
    proc = run_cli("interval", "60", env={"EMPSYNC_CONFIG": str(path)})
    assert proc.returncode == 0, proc.stderr
    assert db.exists()


def test_cli_target_url_option_beats_environment_beats_file(tmp_path):
    file_db, env_db, cli_db = tmp_path / "file.db", tmp_path / "env.db", tmp_path / "cli.db"
    path = tmp_path / "c.toml"
    path.write_text(f'[target]\nurl = "sqlite:///{file_db}"\n[fields.name]\n')
    env = {"EMPSYNC_TARGET_URL": f"sqlite:///{env_db}"}
    proc = run_cli("--config", str(path), "--target-url", f"sqlite:///{cli_db}", "interval", "60", env=env)
    assert proc.returncode == 0, proc.stderr
    assert cli_db.exists() and not env_db.exists() and not file_db.exists()
    proc = run_cli("interval", "60", "--config", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert env_db.exists() and not file_db.exists()


def test_cli_usage_errors_exit_2_without_traceback(tmp_path):
    for args in (("sync", "--bogus"), ("frobnicate",), ("changes", "--limit", "x")):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("empsync")
