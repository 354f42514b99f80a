"""Settings as composed from the mixins of chatrelay/config/: one field list in the page's
order, the sources of Settings.load in their order of precedence, and the properties the
serve command and the host check read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from chatrelay.cli.config_docs import SECTIONS
from chatrelay.config import Settings, UpstreamSpec


def test_the_fields_are_the_mixins_in_the_order_of_the_page() -> None:
    mixins = [base for base in Settings.__bases__ if base is not BaseSettings]
    # Only Settings reads the environment: a mixin is a model, not a BaseSettings of its own.
    models = [m for m in mixins if issubclass(m, BaseModel) and not issubclass(m, BaseSettings)]
    assert models == mixins
    declared = [name for mixin in models for name in mixin.model_fields]
    assert sorted(declared) == sorted(Settings.model_fields)
    assert len(declared) == len(set(declared)), "a field declared by two mixins"
    assert list(Settings.model_fields) == [name for _, names in SECTIONS for name in names]


TOML = """
port = 7000
default_max_tokens = 256
redis_prefix = "toml:"
livepeer_gateway_urls = ["http://toml-gateway"]
a_key_chatrelay_does_not_know = 1

[[upstreams]]
name = "lp-a"
dialect = "livepeer"
base_url = "https://gateway-a.example"
weight = 3
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "chatrelay.toml"
    path.write_text(TOML, encoding="utf-8")
    return path


def test_load_reads_the_toml_file_under_the_env_and_the_overrides(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.load(config_file)
    assert type(settings) is Settings
    assert (settings.port, settings.default_max_tokens) == (7000, 256)
    assert settings.livepeer_gateway_urls == ["http://toml-gateway"]
    lp_a = UpstreamSpec(name="lp-a", dialect="livepeer", base_url="https://gateway-a.example")
    assert settings.upstreams == [lp_a.model_copy(update={"weight": 3.0})]
    assert settings.max_tokens_limit == 4096  # not in the file: the default

    dotenv = tmp_path / ".env"
    dotenv.write_text("CHATRELAY_REDIS_PREFIX=dotenv:\nCHATRELAY_PORT=7001\n", encoding="utf-8")
    monkeypatch.setitem(Settings.model_config, "env_file", dotenv)
    monkeypatch.setenv("CHATRELAY_PORT", "7100")
    monkeypatch.setenv("LIVEPEER_GATEWAY_URL", "http://env-a, http://env-b")
    settings = Settings.load(config_file)
    assert settings.redis_prefix == "dotenv:"  # .env beats the file
    assert settings.port == 7100  # the env beats .env
    assert settings.livepeer_gateway_urls == ["http://env-a", "http://env-b"]
    assert Settings.load(config_file, port=7200).port == 7200  # an override beats the env
    assert Settings.load(None, port=7200).default_max_tokens == 512  # no file: env and defaults


def test_load_refuses_a_missing_file_and_names_a_bad_value(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        Settings.load(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('rate_limit = "lots"\nipv6_prefix = 200\n', encoding="utf-8")
    with pytest.raises(ValidationError) as refused:
        Settings.load(bad)
    assert {error["loc"] for error in refused.value.errors()} == {("rate_limit",), ("ipv6_prefix",)}


def test_the_provider_names_and_the_prefixed_names_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("LIVEPEER_API_KEY", "lp-test")
    monkeypatch.setenv("CHATRELAY_MAX_CONNECTIONS", "12")
    monkeypatch.setenv("CHATRELAY_CORS_ORIGINS", "https://a.example, https://b.example")
    settings = Settings()
    assert settings.openai_base_url == "http://openai.example/v1"
    assert (settings.openai_api_key, settings.livepeer_api_key) == ("sk-test", "lp-test")
    assert settings.max_connections == 12
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    # A field name works as a keyword too, for the fields read from a provider's name.
    assert Settings(openai_api_key="sk-other").openai_api_key == "sk-other"


@pytest.mark.parametrize(
    ("fields", "remote"),
    [
        ({}, False),
        ({"livepeer_gateway_urls": ["http://gateway.example"]}, True),
        ({"openai_base_url": "http://openai.example"}, True),
        ({"upstreams": [{"name": "u", "base_url": "http://u.example"}]}, True),
    ],
)
def test_a_remote_upstream_is_any_of_the_three_ways_to_name_one(
    fields: dict[str, Any], remote: bool
) -> None:
    assert Settings(**fields).has_remote_upstream is remote


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("chat.example.com", False),  # a name may resolve anywhere
    ],
)
def test_on_loopback_is_a_loopback_address_or_localhost(host: str, loopback: bool) -> None:
    assert Settings(host=host).on_loopback is loopback
