"""Which upstreams exist, which models each serves, how healthy each is, and which one answers.

Usage::

    registry = UpstreamRegistry.from_settings(settings)   # env and TOML upstreams
    registry.add(embedded_config)                          # the local model, once it is up
    model = registry.resolve_model(request_model_or_None)  # 404 for an unknown model
    upstream = registry.pick(model, avoid={"lp-a"})        # healthy, weighted, least busy
    registry.succeeded(upstream) / registry.failed(upstream, failure)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from chatrelay.config import LIVEPEER_MODELS, Settings
from chatrelay.errors import NOT_FOUND, ChatRelayError
from chatrelay.upstreams.client import Upstream, UpstreamConfig, UpstreamFailure
from chatrelay.upstreams.health import CircuitBreaker, ModelHealth, ModelStatus
from chatrelay.upstreams.pricing import NANOS, UNPRICED, Price, default_billing
from chatrelay.upstreams.stream import Timeouts


def unreachable_failure(failures: list[UpstreamFailure]) -> UpstreamFailure:
    """One 502 ``upstream_unreachable`` for all the refusals of a round (each names its URL
    and the setting that sets it)."""
    if len(failures) == 1:
        return failures[0]
    failure = UpstreamFailure(
        "No upstream of the model can be reached: " + " ".join(f.message for f in failures),
        kind="upstream_unreachable",
        code="upstream_unreachable",
    )
    failure.nothing_there = True
    return failure


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
                price=Price(None, None, billing="requested"),
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
    for spec in settings.upstreams:
        key = spec.api_key.get_secret_value() if spec.api_key is not None else None
        if key is None and spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
        default_models = LIVEPEER_MODELS if spec.dialect == "livepeer" else ()
        billing = spec.billing or default_billing(spec.dialect)
        price = Price(spec.input_price, spec.output_price, spec.currency, billing)
        configs.append(
            UpstreamConfig(
                name=spec.name,
                dialect=spec.dialect,
                base_url=spec.base_url,
                models=tuple(spec.models) or tuple(settings.models) or default_models,
                api_key=key,
                configured_by=f"the [[upstreams]] entry '{spec.name}' of the config file",
                weight=spec.weight,
                text_only=spec.text_only,
                drop_params=tuple(spec.drop_params),
                price=price,
                spend_cap=round(spec.spend_cap * NANOS),
                model_prices={
                    model: replace(
                        price,
                        input=price.input if own.input_price is None else own.input_price,
                        output=price.output if own.output_price is None else own.output_price,
                    )
                    for model, own in spec.model_prices.items()
                },
            )
        )
    return configs


@dataclass(frozen=True, slots=True)
class RoutingFigure:
    """What routing by figures reads of one upstream for one model (None: not known)."""

    cost_per_1k: float | None  # paid per 1,000 tokens the users received
    ttft_ms: float | None  # median time to first token


class UpstreamRegistry:
    """The configured upstreams (in order of preference) with their health."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeouts = Timeouts(
            connect=settings.connect_timeout,
            first_token=settings.first_token_timeout,
            stall=settings.stall_timeout,
        )
        self.upstreams: list[Upstream] = []
        self.breakers: dict[str, CircuitBreaker] = {}
        # Each upstream's last failure when nobody was there (refused, no such host), until it
        # answers again: for answering at once while every upstream of a model is so.
        self.last_failure: dict[str, UpstreamFailure] = {}
        self.model_health: dict[str, ModelHealth] = {}
        # Routing by figures (``routing``): the strategy per model, and each upstream's
        # figures for a model from real traffic, refreshed by answers/figures.py.
        self.routing = settings.routing
        self.explore = settings.routing_explore
        self.figures: dict[tuple[str, str], RoutingFigure] = {}
        self._priced = False

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamRegistry:
        registry = cls(settings)
        for config in remote_upstream_configs(settings):
            registry.add(config)
        return registry

    def add(self, config: UpstreamConfig) -> Upstream:
        if any(existing.config.name == config.name for existing in self.upstreams):
            raise ValueError(f"two upstreams are named '{config.name}'")
        upstream = Upstream(config, timeouts=self._timeouts)
        self.upstreams.append(upstream)
        self._priced = self._priced or bool(
            config.price.known or config.model_prices or config.spend_cap
        )
        self.breakers[config.name] = CircuitBreaker(
            failure_threshold=self._settings.breaker_failures,
            cooldown=self._settings.breaker_cooldown,
        )
        for model in config.models:
            self.model_health.setdefault(model, ModelHealth())
        return upstream

    def models(self) -> list[tuple[str, Upstream]]:
        """Each model once, with the first upstream that serves it."""
        seen: dict[str, Upstream] = {}
        for upstream in self.upstreams:
            for model in upstream.config.models:
                seen.setdefault(model, upstream)
        return list(seen.items())

    def serving(self, model: str) -> list[Upstream]:
        return [u for u in self.upstreams if model in u.config.models]

    @property
    def default_model(self) -> str | None:
        if self._settings.default_model:
            return self._settings.default_model
        models = self.models()
        return models[0][0] if models else None

    def resolve_model(self, model: str | None) -> str:
        """The model to use (the default when None), or a 404 listing those that exist."""
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
        if any(name == wanted for name, _ in available):
            assert wanted is not None
            return wanted
        names = ", ".join(name for name, _ in available)
        raise ChatRelayError(
            404,
            f"Model '{wanted}' is not served here. Available models: {names}.",
            code="model_not_found",
            type=NOT_FOUND,
            param="model",
        )

    def usable(self, upstream: Upstream) -> bool:
        return self.breakers[upstream.config.name].allows()

    def pick(
        self,
        model: str,
        *,
        avoid: frozenset[str] = frozenset(),
        only: frozenset[str] | None = None,
    ) -> Upstream | None:
        """A usable upstream for the model (among ``only``, those that can carry the request,
        when given): not in ``avoid`` if possible, then the least busy for its weight (random
        among equals, so equal upstreams share the load)."""
        usable = self.usable_for(model, only)
        fresh = [u for u in usable if u.config.name not in avoid] or usable
        if not fresh:
            return None
        strategy = self.routing.get(model) or self.routing.get("*") or "least_busy"
        if strategy != "least_busy" and len(fresh) > 1:
            fresh = self._best_by_figures(model, fresh, strategy)
        best = min(u.active / u.config.weight for u in fresh)
        chosen = random.choice([u for u in fresh if u.active / u.config.weight == best])
        self.breakers[chosen.config.name].begin()
        return chosen

    def _best_by_figures(self, model: str, fresh: list[Upstream], strategy: str) -> list[Upstream]:
        """The upstreams to choose among under ``cost`` or ``latency``: those without figures
        yet first (to learn them), else, but for a share ``explore`` of the time (a recovered
        upstream gets traffic again), the one(s) with the best figure."""
        scored: list[tuple[float, Upstream]] = []
        unknown = []
        for upstream in fresh:
            figure = self.figures.get((upstream.config.name, model))
            value = None
            if figure is not None:
                value = figure.cost_per_1k if strategy == "cost" else figure.ttft_ms
            if value is None:
                unknown.append(upstream)
            else:
                scored.append((value, upstream))
        if unknown:
            return unknown
        if random.random() < self.explore:
            return [random.choice(fresh)]
        best = min(value for value, _ in scored)
        return [upstream for value, upstream in scored if value == best]

    def usable_for(self, model: str, only: frozenset[str] | None = None) -> list[Upstream]:
        """The model's upstreams whose breakers let a request through (among ``only``)."""
        return [
            u
            for u in self.serving(model)
            if self.usable(u) and (only is None or u.config.name in only)
        ]

    def retry_in(self, model: str) -> float:
        """How long until some upstream of the model lets a request through again."""
        waits = [self.breakers[u.config.name].retry_in() for u in self.serving(model)]
        return min(waits, default=0.0)

    def succeeded(self, upstream: Upstream) -> None:
        self.breakers[upstream.config.name].success()
        self.last_failure.pop(upstream.config.name, None)

    def failed(self, upstream: Upstream, failure: UpstreamFailure) -> None:
        name = upstream.config.name
        if failure.nothing_there:  # a copy: the raised one's traceback holds its stream
            self.last_failure[name] = failure.copy()
        else:
            self.last_failure.pop(name, None)
        breaker = self.breakers[upstream.config.name]
        if failure.counts_against_upstream:
            breaker.failure()
        else:
            breaker.trial_in_flight = False

    def abandoned(self, upstream: Upstream) -> None:
        """The attempt was cancelled (stop, shutdown): neither a success nor a failure."""
        self.breakers[upstream.config.name].trial_in_flight = False

    def price_of(self, upstream: str, model: str) -> Price:
        """What the named upstream charges for the model (unknown for a name not here)."""
        for candidate in self.upstreams:
            if candidate.config.name == upstream:
                return candidate.config.price_of(model)
        return UNPRICED

    @property
    def priced(self) -> bool:
        """Whether any upstream has a price or a spend cap: else spend limits have nothing
        to count, and admission skips them (known once the upstreams are added)."""
        return self._priced

    def spend_ask(
        self, model: str, names: Iterable[str], *, prompt_tokens: int, max_tokens: int
    ) -> tuple[dict[str, int], dict[str, int]]:
        """What an answer may cost at worst on each of these upstreams (nanos; unpriced ones
        cost nothing here), and the spend caps of those that have one."""
        worst, caps = {}, {}
        for upstream in self.upstreams:
            config = upstream.config
            if config.name not in names:
                continue
            cost = config.price_of(model).cost(
                prompt_tokens=prompt_tokens,
                completion_tokens=max_tokens,
                requested_tokens=max_tokens,
            )
            worst[config.name] = cost.paid or 0
            if config.spend_cap > 0:
                caps[config.name] = config.spend_cap
        return worst, caps

    def health_of(self, model: str) -> ModelHealth:
        return self.model_health.setdefault(model, ModelHealth())

    def model_status(self, model: str) -> ModelStatus:
        usable = any(self.usable(u) for u in self.serving(model))
        return self.health_of(model).status(usable=usable)

    @property
    def ready(self) -> bool:
        return any(self.usable(u) for u in self.upstreams)

    async def readiness(self, *, wait: float) -> str:
        """``ok``, or why traffic should not come yet: every breaker is open, or no upstream
        of the default model has answered since start. Until one has, the upstreams of the
        default model are probed here (a cheap GET each, at most ``wait`` seconds): a URL
        where nothing listens is found out at once, not at the first user's request."""
        if not self.ready:
            return "none usable (all circuit breakers open)"
        model = self.default_model
        if model is None or self.answered(model):
            return "ok"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.gather(*(u.probe() for u in self.serving(model)))
        if self.answered(model):
            return "ok"
        silent = ", ".join(f"{u.config.name} at {u.shown_url}" for u in self.serving(model))
        return f"no upstream of the default model '{model}' has answered since start: {silent}"

    def answered(self, model: str) -> bool:
        """Whether some upstream of the model has answered HTTP since start."""
        return any(u.answered for u in self.serving(model))

    def unreachable(self, model: str) -> UpstreamFailure | None:
        """When every upstream of the model was last refused (nobody listens, or its host
        does not resolve): the failure to answer with at once, as a wrong URL, instead of
        waiting for breakers and back-off (a dead configuration answers fast)."""
        failures = [self.last_failure.get(u.config.name) for u in self.serving(model)]
        if not failures or not all(f is not None and f.nothing_there for f in failures):
            return None
        return unreachable_failure([f for f in failures if f is not None])

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()
