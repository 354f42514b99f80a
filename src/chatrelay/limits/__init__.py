"""Rate limits per client IP and token budgets per user, in this process or shared in Redis.

:class:`chatrelay.limits.quotas.Quotas` is the one object the rest of the app talks to; the
backends behind it are small Protocols (:mod:`.budget`, :mod:`.rate`, :mod:`.streams`) with an
in-process implementation each and Redis ones in :mod:`.redis_backend`.
"""
