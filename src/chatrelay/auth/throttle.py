"""The sign-in throttle, as the sign-in and password routes import it today.

It lives in ``chatrelay/limits/sign_in.py`` with the rest of the concept (in memory or shared
through Redis, failing safe); this module goes once its importers (``auth/parts.py``,
``http/routes/auth.py``, ``http/routes/account.py``, ``tests/e2e/test_auth.py``) import
from there.
"""

from __future__ import annotations

from chatrelay.limits.sign_in import MemorySignInThrottle as MemorySignInThrottle
from chatrelay.limits.sign_in import SignInThrottle as SignInThrottle
from chatrelay.limits.sign_in import new_attempt_id as new_attempt_id
