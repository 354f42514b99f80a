"""One typed settings object, read once at start and passed down.

Usage::

    settings = Settings()            # env vars (CHATRELAY_*, LIVEPEER_*, OPENAI_*) and .env
    settings = Settings.load(path)   # the same, with a TOML file underneath the env

The fields are declared by concept, one settings mixin per module, as docs/configuration.md
groups them: ``upstreams``, ``serving`` (and client connections), ``requests``, ``failover``
(timeouts and retries), ``embedded`` (the local model), ``storage`` (and Redis, instances),
``accounts`` (and sessions), ``budgets`` (and rate limits), ``logs``; ``settings`` composes them.
"""

from chatrelay.config.embedded import EMBEDDED_MODEL
from chatrelay.config.settings import Settings
from chatrelay.config.upstreams import LIVEPEER_MODELS, UpstreamSpec

__all__ = ["EMBEDDED_MODEL", "LIVEPEER_MODELS", "Settings", "UpstreamSpec"]
