"""``GET /api/usage``: what the current user has used and has left this budget period."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from chatrelay.auth.identity import require_user
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import QuotasDep
from chatrelay.store.models import User

router = APIRouter()


@router.get("/api/usage", responses=error_responses(401))
async def usage(user: Annotated[User, Depends(require_user)], quotas: QuotasDep) -> dict[str, Any]:
    """``{used, reserved, limit, remaining, period, period_start, resets_at}``; ``limit`` and
    ``remaining`` are null when the user's budget is unlimited."""
    return await quotas.usage(user)
