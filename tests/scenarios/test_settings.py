"""Settings: defaults, environment and .env sources, and one-line errors that name the variable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelbay.config import Settings, SettingsError, load_settings
from modelbay.logs import configure_logging


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MODELBAY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def test_defaults_are_embedded_and_under_the_xdg_data_dir(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == tmp_path / "xdg" / "modelbay"
    assert settings.resolved_model_store == settings.home / "models"
    assert settings.resolved_database_url == f"sqlite:///{settings.home / 'modelbay.db'}"
    assert settings.embedded_jobs and settings.redis_url is None
    assert settings.hub_endpoint == "https://huggingface.co"
    assert settings.allow_pickle is False and settings.trust_remote_code is False
    assert settings.roles == {"admin": ["console:*", "api:*"]}


def test_environment_and_dotenv_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MODELBAY_HUB_ENDPOINT=http://127.0.0.1:9999\nMODELBAY_ALLOW_PICKLE=true\n")
    monkeypatch.setenv("MODELBAY_REDIS_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("MODELBAY_ROLES", '{"admin": ["slack:U1"], "trainer": ["discord:role:42"]}')
    monkeypatch.setenv("MODELBAY_DATABASE_URL", "postgresql://me@db:5432/modelbay")
    settings = load_settings()
    assert settings.hub_endpoint == "http://127.0.0.1:9999" and settings.allow_pickle is True
    assert settings.redis_url == "redis://127.0.0.1:6379/2" and not settings.embedded_jobs
    assert settings.roles["trainer"] == ["discord:role:42"]
    assert settings.database_url == "postgresql+psycopg://me@db:5432/modelbay"  # psycopg 3 driver


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MODELBAY_ROLES", "not json", 'MODELBAY_ROLES: must be JSON, e.g. {"admin": ["slack:U123"]}'),
        ("MODELBAY_ROLES", '{"boss": ["slack:U1"]}', "MODELBAY_ROLES: unknown role 'boss'; roles are viewer, user, "
                                                      "trainer, admin"),
        ("MODELBAY_ENVIRONMENT", "prod", "MODELBAY_ENVIRONMENT: Input should be 'development', 'production' or 'test'"),
        ("MODELBAY_ALLOW_PICKLE", "maybe", "MODELBAY_ALLOW_PICKLE: Input should be a valid boolean, unable to "
                                           "interpret input (accepted: true or false)"),
        ("MODELBAY_REDIS_URL", "localhost:6379", "MODELBAY_REDIS_URL: use a redis://host:port/db URL, or leave it "
                                                 "unset for in-process jobs"),
        ("MODELBAY_DATABASE_URL", "mysql://x/y", "MODELBAY_DATABASE_URL: use a sqlite:/// or postgresql+psycopg:// URL"),
        ("MODELBAY_HUB_ENDPOINT", "ftp://mirror", "MODELBAY_HUB_ENDPOINT: use an http:// or https:// URL"),
        ("MODELBAY_DEFAULT_ROLE", "root", "MODELBAY_DEFAULT_ROLE: Input should be 'viewer', 'user', 'trainer' or "
                                          "'admin'"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == message
    assert caught.value.variable == variable


def test_production_needs_postgresql_and_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBAY_ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="^MODELBAY_DATABASE_URL: production needs a postgresql"):
        load_settings()
    monkeypatch.setenv("MODELBAY_DATABASE_URL", "postgresql+psycopg://db/modelbay")
    monkeypatch.setenv("MODELBAY_API_TOKEN", "changeme")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == "MODELBAY_API_TOKEN: replace the placeholder secret"
    monkeypatch.setenv("MODELBAY_API_TOKEN", "a-real-long-random-token")
    assert load_settings().environment == "production"


def test_secrets_are_hidden_in_repr_and_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBAY_HUB_TOKEN", "hf_supersecretvalue")
    settings = load_settings(home=tmp_path / "home")
    assert "hf_supersecretvalue" not in repr(settings)
    log_file = configure_logging(settings, to_file=True)
    try:
        logging.getLogger("modelbay.test").warning("token was %s", settings.hub_token.get_secret_value())
        try:
            raise RuntimeError(f"request failed with {settings.hub_token.get_secret_value()}")
        except RuntimeError:
            logging.getLogger("modelbay.test").exception("with a traceback")
        for handler in logging.getLogger().handlers:
            handler.flush()
        text = log_file.read_text()
        assert "token was ***" in text and "request failed with ***" in text
        assert "hf_supersecretvalue" not in text
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()


def test_settings_class_documents_every_variable() -> None:
    # The README's configuration table is generated from these names: each must carry the prefix.
    names = {f"MODELBAY_{name.upper()}" for name in Settings.model_fields}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = sorted(name for name in names if name not in readme)
    assert not missing, f"README lacks {missing}"
