"""The circuit breaker and which upstream a request goes to (upstreams/health.py,
upstreams/registry.py), on their own: no upstream is asked anything."""

from __future__ import annotations

import pytest

from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.client import UpstreamConfig
from chatrelay.upstreams.health import CircuitBreaker
from chatrelay.upstreams.registry import UpstreamRegistry


def test_the_breaker_opens_after_its_threshold_and_lets_one_trial_through_after_cooling() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, cooldown=30, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state == "closed" and breaker.allows()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allows()
    assert breaker.retry_in() == 30
    now[0] = 30
    assert breaker.state == "half_open" and breaker.allows()
    breaker.begin()
    assert not breaker.allows()  # one trial at a time
    breaker.failure()  # the trial failed: a new cool-down
    assert breaker.state == "open" and breaker.retry_in() == 30
    now[0] = 60
    breaker.begin()
    breaker.success()
    assert breaker.state == "closed" and breaker.failures == 0


def registry(*configs: UpstreamConfig, **settings: object) -> UpstreamRegistry:
    made = UpstreamRegistry(Settings(_env_file=None, **settings))  # type: ignore[call-arg]
    for config in configs:
        made.add(config)
    return made


def upstream(name: str, *models: str, weight: float = 1.0) -> UpstreamConfig:
    return UpstreamConfig(
        name=name, dialect="openai", base_url=f"http://{name}.invalid", models=models,
        weight=weight,
    )  # fmt: skip


def test_the_least_busy_upstream_for_its_weight_is_picked() -> None:
    made = registry(upstream("a", "m"), upstream("b", "m", weight=3))
    a, b = made.upstreams
    a.active, b.active = 1, 2  # b: 2/3 busy for its weight, a: 1/1
    picked = made.pick("m")
    assert picked is b


def test_an_upstream_already_tried_is_avoided_while_another_is_usable() -> None:
    made = registry(upstream("a", "m"), upstream("b", "m"))
    for _ in range(5):
        picked = made.pick("m", avoid=frozenset({"a"}))
        assert picked is not None and picked.config.name == "b"
    only_a = made.pick("m", avoid=frozenset({"a"}), only=frozenset({"a"}))
    assert only_a is not None and only_a.config.name == "a"  # avoided, but all there is


def test_an_open_breaker_takes_an_upstream_out_until_it_cools() -> None:
    made = registry(upstream("a", "m"), upstream("b", "m"), breaker_failures=1)
    made.breakers["a"].failure()
    assert [u.config.name for u in made.usable_for("m")] == ["b"]
    made.breakers["b"].failure()
    assert made.pick("m") is None and made.retry_in("m") > 0


def test_models_resolve_to_the_default_or_a_404_that_lists_them() -> None:
    made = registry(upstream("a", "m1", "m2"), upstream("b", "m2", "m3"))
    assert [name for name, _ in made.models()] == ["m1", "m2", "m3"]
    assert made.resolve_model(None) == "m1"
    with pytest.raises(ChatRelayError) as refused:
        made.resolve_model("nope")
    assert refused.value.status == 404 and "m1, m2, m3" in refused.value.message
    with pytest.raises(ChatRelayError) as none:
        registry().resolve_model(None)
    assert none.value.status == 503
