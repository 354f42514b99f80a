"""``Settings``: the settings mixins of this package as one pydantic-settings class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from chatrelay.config.accounts import AccountSettings
from chatrelay.config.alerts import AlertSettings
from chatrelay.config.budgets import BudgetSettings
from chatrelay.config.embedded import EmbeddedSettings
from chatrelay.config.failover import FailoverSettings
from chatrelay.config.logs import LogSettings
from chatrelay.config.requests import RequestSettings
from chatrelay.config.serving import ServingSettings
from chatrelay.config.storage import StorageSettings
from chatrelay.config.upstreams import UpstreamSettings


class Settings(
    BaseSettings,
    # The mixins last section first: pydantic orders the fields from the last base to the
    # first, so they come out in docs/configuration.md's order (as repr and errors list them).
    AlertSettings,
    LogSettings,
    BudgetSettings,
    AccountSettings,
    StorageSettings,
    EmbeddedSettings,
    FailoverSettings,
    RequestSettings,
    ServingSettings,
    UpstreamSettings,
):
    """Everything chatrelay can be told. Env names are CHATRELAY_<FIELD> unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="CHATRELAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable the field ``name`` is read from (an alias, or
        CHATRELAY_<FIELD>)."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str) and choice.isupper():
                    return choice
        return f"{cls.model_config.get('env_prefix', '')}{name}".upper()

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read settings: keyword overrides beat env vars, which beat the TOML file's keys."""
        if config_file is None:
            return cls(**overrides)
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")

        class FileBackedSettings(cls):  # type: ignore[valid-type,misc]
            model_config = SettingsConfigDict(**{**cls.model_config, "toml_file": config_file})

            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                toml = TomlConfigSettingsSource(settings_cls)
                return (init_settings, env_settings, dotenv_settings, toml)

        return Settings.model_validate(FileBackedSettings(**overrides).model_dump())
