"""``GET /api/usage``: what the current user has used and has left this budget period."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from chatrelay.auth.identity import require_user
from chatrelay.http.api_docs import error_responses
from chatrelay.limits.quotas import Quotas
from chatrelay.store.models import User

router = APIRouter()


def quotas_of(request: Request) -> Quotas:
    quotas: Quotas = request.app.state.quotas
    return quotas


@router.get("/api/usage", responses=error_responses(401))
async def usage(request: Request, user: Annotated[User, Depends(require_user)]) -> dict[str, Any]:
    """``{used, reserved, limit, remaining, period, period_start, resets_at}``; ``limit`` and
    ``remaining`` are null when the user's budget is unlimited."""
    return await quotas_of(request).usage(user)
