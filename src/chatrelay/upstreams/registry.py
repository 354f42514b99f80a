"""Which upstreams exist, which models each serves, and which one answers a request.

Usage::

    registry = UpstreamRegistry.from_settings(settings)   # remote upstreams from env/config
    registry.add(embedded_config)                          # the sidecar, once it is up
    upstream, model = registry.resolve(request_model_or_None)
"""

from __future__ import annotations

from chatrelay.config import LIVEPEER_MODELS, Settings
from chatrelay.errors import NOT_FOUND, ChatRelayError
from chatrelay.upstreams.client import Timeouts, Upstream, UpstreamConfig


def remote_upstream_configs(settings: Settings) -> list[UpstreamConfig]:
    """The upstreams the operator configured through the environment or the config file."""
    configs: list[UpstreamConfig] = []
    for index, url in enumerate(settings.livepeer_gateway_urls):
        configs.append(
            UpstreamConfig(
                name="livepeer" if index == 0 else f"livepeer-{index + 1}",
                dialect="livepeer",
                base_url=url,
                models=tuple(settings.models) or LIVEPEER_MODELS,
                api_key=settings.livepeer_api_key,
                configured_by="LIVEPEER_GATEWAY_URL",
            )
        )
    if settings.openai_base_url:
        default = settings.default_model
        models = tuple(settings.models) or ((default,) if default else ("gpt-4o-mini",))
        configs.append(
            UpstreamConfig(
                name="openai",
                dialect="openai",
                base_url=settings.openai_base_url,
                models=models,
                api_key=settings.openai_api_key,
                configured_by="OPENAI_BASE_URL",
            )
        )
    return configs


class UpstreamRegistry:
    """The configured upstreams, in order of preference."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeouts = Timeouts(
            connect=settings.connect_timeout,
            first_token=settings.first_token_timeout,
            stall=settings.stall_timeout,
        )
        self.upstreams: list[Upstream] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamRegistry:
        registry = cls(settings)
        for config in remote_upstream_configs(settings):
            registry.add(config)
        return registry

    def add(self, config: UpstreamConfig) -> Upstream:
        upstream = Upstream(config, timeouts=self._timeouts)
        self.upstreams.append(upstream)
        return upstream

    def models(self) -> list[tuple[str, Upstream]]:
        """Each model once, with the first upstream that serves it."""
        seen: dict[str, Upstream] = {}
        for upstream in self.upstreams:
            for model in upstream.config.models:
                seen.setdefault(model, upstream)
        return list(seen.items())

    @property
    def default_model(self) -> str | None:
        if self._settings.default_model:
            return self._settings.default_model
        models = self.models()
        return models[0][0] if models else None

    def resolve(self, model: str | None) -> tuple[Upstream, str]:
        """The upstream for a model (the default model when None), or a 404 listing the models."""
        available = self.models()
        if not available:
            raise ChatRelayError(
                503,
                "No upstream is configured. Set LIVEPEER_GATEWAY_URL or OPENAI_BASE_URL, "
                "or leave both unset to use the embedded model.",
                code="no_upstream",
                type="server_error",
            )
        wanted = model or self.default_model
        for name, upstream in available:
            if name == wanted:
                return upstream, name
        names = ", ".join(name for name, _ in available)
        raise ChatRelayError(
            404,
            f"Model '{wanted}' is not served here. Available models: {names}.",
            code="model_not_found",
            type=NOT_FOUND,
            param="model",
        )

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()
