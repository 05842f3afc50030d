from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from cdp.config import Config, EnvValue, Secret, load_config
from cdp.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cdp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return str(info.value)


def test_missing_default_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == Config()
    assert config.database.url == "sqlite:///cdp.db"
    assert config.mode == "production"


def test_file_values_are_read(tmp_path):
    path = write(
        tmp_path, 'mode = "development"\n[server]\nport = 9001\n[plugins]\nblock = ["x"]\n'
    )
    config = load_config(path, environ={})
    assert (config.mode, config.server.port, config.plugins.block) == ("development", 9001, ["x"])


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "[database]\nurll = 'sqlite://'\n")
    assert error_of(path) == f"{path}: database.urll: unknown key"


def test_wrong_type_names_file_key_and_value(tmp_path):
    path = write(tmp_path, "[server]\nport = 'eighty'\n")
    message = error_of(path)
    assert message.startswith(f"{path}: server.port: ")
    assert "'eighty'" in message


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "[server]\nport = 70000\n")
    assert error_of(path).startswith(f"{path}: server.port: Input should be less than or equal to")


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[server\nport = 1\n")
    assert error_of(path).startswith(f"{path}: not valid TOML:")


def test_explicit_missing_file_is_an_error(tmp_path):
    assert error_of(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: config file not found"
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(environ={"CDP_CONFIG": str(tmp_path / "nope.toml")})


def test_cdp_config_variable_picks_the_file(tmp_path):
    path = write(tmp_path, "[server]\nport = 9002\n")
    assert load_config(environ={"CDP_CONFIG": str(path)}).server.port == 9002


def test_environment_overrides_file(tmp_path):
    path = write(tmp_path, "[database]\nurl = 'sqlite:///a.db'\n[server]\nport = 9001\n")
    env = {
        "CDP_DATABASE_URL": "postgresql+psycopg://db/cdp",
        "CDP_SERVER_PORT": "9100",
        "CDP_MODE": "development",
        "CDP_PLUGINS_BLOCK": "a, b",
    }
    config = load_config(path, environ=env)
    assert config.database.url == "postgresql+psycopg://db/cdp"
    assert config.server.port == 9100
    assert config.mode == "development"
    assert config.plugins.block == ["a", "b"]


def test_bad_environment_override_names_the_variable(tmp_path):
    message = error_of(write(tmp_path, ""), {"CDP_SERVER_PORT": "many"})
    assert message.startswith("environment variable CDP_SERVER_PORT: server.port: ")


def test_env_reference_is_resolved(tmp_path):
    path = write(tmp_path, '[database]\nurl = { env = "DB_URL" }\n')
    config = load_config(path, environ={"DB_URL": "sqlite:///x.db"})
    assert config.database.url == "sqlite:///x.db"


def test_missing_env_secret_names_key_and_variable(tmp_path):
    path = write(
        tmp_path, '[[channels]]\nname = "e"\ntype = "smtp"\npassword = { env = "SMTP_PW" }\n'
    )
    assert (
        error_of(path) == f"{path}: channels[0].password: environment variable SMTP_PW is not set"
    )


def test_component_entries_keep_their_options(tmp_path):
    path = write(tmp_path, '[[channels]]\nname = "mail"\ntype = "smtp"\nhost = "localhost"\n')
    entry = load_config(path, environ={}).channels[0]
    assert (entry.name, entry.type, entry.options()) == ("mail", "smtp", {"host": "localhost"})


def test_component_entry_needs_name_and_type(tmp_path):
    path = write(tmp_path, '[[sources]]\ntype = "csv"\n')
    assert error_of(path) == f"{path}: sources[0].name: required key is missing"


class WithSecret(BaseModel):
    password: Secret


def test_secret_fields_refuse_literal_values():
    with pytest.raises(ValidationError, match="secrets are not kept in config files"):
        WithSecret.model_validate({"password": "hunter2"})
    ok = WithSecret.model_validate({"password": EnvValue("hunter2")})
    assert ok.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(ok)


def test_secret_value_is_never_echoed_in_errors(tmp_path):
    path = write(tmp_path, '[server]\nport = { env = "PORT_SECRET" }\n')
    message = error_of(path, {"PORT_SECRET": "s3cr3t-value"})
    assert message.startswith(f"{path}: server.port: ")
    assert "s3cr3t-value" not in message
