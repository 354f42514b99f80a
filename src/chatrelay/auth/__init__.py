"""Who is asking: guest cookies, accounts (argon2), sessions, API keys (hashed at rest).

Routes depend on :mod:`chatrelay.auth.identity`::

    @router.post("/api/chat")
    async def chat(request: Request, user: User = Depends(require_user)) -> ...
"""
