"""The upstreams settings: which LLM endpoints answer, and the models offered."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr

from chatrelay.setting_types import CommaList

# The models Livepeer orchestrators commonly advertise (livepeer-wire.md); the first is warm.
LIVEPEER_MODELS = (
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-2-9b-it",
    "Qwen/Qwen2.5-7B-Instruct",
)


class ModelPriceSpec(BaseModel):
    """One model's own prices on an upstream (``model_prices``), over the upstream's."""

    input_price: float | None = Field(default=None, ge=0)
    output_price: float | None = Field(default=None, ge=0)


class UpstreamSpec(BaseModel):
    """One upstream declared in the TOML config (``[[upstreams]]``)."""

    name: str = Field(description="Its name in logs, metrics and the stored `upstream`.")
    dialect: Literal["livepeer", "openai"] = Field(
        default="openai", description="`livepeer` (a gateway's `/llm`) or `openai`."
    )
    base_url: str = Field(
        description="Its base URL, as `LIVEPEER_GATEWAY_URL` or `OPENAI_BASE_URL`."
    )
    api_key: SecretStr | None = Field(default=None, description="Its key, sent as a Bearer token.")
    api_key_env: str | None = Field(
        default=None,
        description="The name of an env var holding the key, so the file itself can stay free "
        "of secrets.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="The models it serves (Livepeer's default: the four usual ones).",
    )
    weight: float = Field(
        default=1.0, gt=0, description="Its share of the traffic relative to the others."
    )
    text_only: bool = Field(
        default=False,
        description="Its models take text only: a request with images, audio or files is "
        "refused by name.",
    )
    drop_params: list[str] = Field(
        default_factory=list,
        description="Request fields left out for it instead of refused (as LiteLLM's "
        "`drop_params`); responses list the ones dropped in `X-Chatrelay-Dropped-Params`.",
    )
    input_price: float | None = Field(
        default=None,
        ge=0,
        description="What it charges per million prompt tokens, in `currency`. Unset: its "
        "costs are unknown (shown as such, never as zero).",
    )
    output_price: float | None = Field(
        default=None, ge=0, description="What it charges per million completion tokens."
    )
    currency: str = Field(default="USD", max_length=8, description="The currency of its prices.")
    billing: Literal["requested", "used"] | None = Field(
        default=None,
        description="`requested`: it bills the `max_tokens` asked for, generated or not (a "
        "Livepeer gateway, the default for `livepeer`); `used`: the tokens generated (the "
        "default for `openai`).",
    )
    spend_cap: float = Field(
        default=0,
        ge=0,
        description="Money all answers on it may spend per budget period, in `currency`; "
        "past it the model's other upstreams answer, and with none left a request is "
        "refused (429). `0` is no cap.",
    )
    model_prices: dict[str, ModelPriceSpec] = Field(
        default_factory=dict,
        description="Prices of some of its models, over its own: "
        '`model_prices = { "m" = { input_price = 0.1, output_price = 0.4 } }`.',
    )


class UpstreamSettings(BaseModel):
    """Settings mixin: the upstreams and the models they offer."""

    # The env names are the ones operators already know from each provider.
    livepeer_gateway_urls: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("LIVEPEER_GATEWAY_URL", "livepeer_gateway_urls"),
        description="Livepeer gateway base URL; a comma list gives several gateways (named "
        "`livepeer`, `livepeer-2`, ...). Requests go to `{url}/llm`.",
    )
    livepeer_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LIVEPEER_API_KEY", "livepeer_api_key"),
        description="Sent as `Authorization: Bearer ...` to the gateway.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="Any OpenAI-compatible server, named `openai` "
        "(`{base}/v1/chat/completions`, or `{base}/chat/completions` when the base ends in "
        "`/v1`).",
    )
    openai_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="Sent as `Authorization: Bearer ...` to it.",
    )
    upstreams: list[UpstreamSpec] = Field(
        default_factory=list,
        description="More upstreams, added to the ones above; usually `[[upstreams]]` in the "
        "TOML file, or JSON in the env var (see [Several upstreams](#several-upstreams)).",
    )
    routing: dict[str, Literal["least_busy", "cost", "latency"]] = Field(
        default_factory=dict,
        description='How a model\'s upstreams are chosen, per model (TOML `[routing]`, `"*"` '
        "for the others): `least_busy` (the default: fewest answers running for its "
        "weight), `cost` (the lowest cost per 1,000 tokens its users received) or `latency` "
        "(the lowest median time to first token), from the figures of real traffic "
        "(`CHATRELAY_FIGURES_WINDOW`).",
    )
    routing_explore: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of answers under `cost` or `latency` sent to another upstream than "
        "the best, so that figures stay fresh and a recovered upstream gets traffic again; "
        "upstreams without figures yet are tried first.",
    )
    figures_window: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds of answers the figures per upstream are taken over (routing, "
        "`/metrics`, the admin view).",
    )
    figures_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between two computations of the figures from the database; "
        "`0`: never (routing by figures falls back to `least_busy`).",
    )
    default_model: str | None = Field(
        default=None,
        description="Model used when a request names none. Unset: the first model offered "
        "(Livepeer: `meta-llama/Meta-Llama-3.1-8B-Instruct`).",
    )
    models: CommaList = Field(
        default_factory=list,
        description="Comma list of the models offered. Unset with Livepeer: Llama 3.1 8B, "
        "Mistral 7B v0.3, Gemma 2 9B, Qwen 2.5 7B.",
    )

    @property
    def has_remote_upstream(self) -> bool:
        return bool(self.livepeer_gateway_urls or self.openai_base_url or self.upstreams)
