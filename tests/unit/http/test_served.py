"""The endpoints answered ahead of the router (http/served.py) are matched as the router
matches them: method, path, and the root path a proxy puts in front."""

from __future__ import annotations

import pytest

from chatrelay.http.served import ServedEndpoints, ServedRoute

PATH = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("path", "root_path", "method", "served_itself"),
    [
        (PATH, "", "POST", True),
        ("/proxy" + PATH, "/proxy", "POST", True),  # uvicorn --root-path puts it in front
        ("/proxy" + PATH, "", "POST", False),
        (PATH, "", "GET", False),  # the router answers 405
    ],
)
async def test_served_endpoints_match_as_the_router_does(
    path: str, root_path: str, method: str, served_itself: bool
) -> None:
    reached: list[str] = []

    async def endpoint(scope: object, receive: object, send: object, rest: object) -> None:
        reached.append("endpoint")

    async def rest_of_app(scope: object, receive: object, send: object) -> None:
        reached.append("rest")

    app = ServedEndpoints(rest_of_app, {("POST", PATH): endpoint})  # type: ignore[dict-item]
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path}
    await app(scope, None, None)  # type: ignore[arg-type]
    assert reached == ["endpoint" if served_itself else "rest"]
    assert (scope.get("route") == ServedRoute("POST", PATH)) == served_itself
