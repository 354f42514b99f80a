"""The admin view's API (issue 24, item 3): ``GET /api/admin/usage`` grouped, filtered and as
CSV, from the rows of ``attempt_costs``; the accounts and keys with what they spent this
period; an admin's actions (a budget, a spend limit, disabling a user, revoking a key) taking
effect at the next request; and, for anyone who is not an admin, the 404 of an unknown path
for every route, method and body. On SQLite and PostgreSQL where the SQL is the subject."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chatrelay.auth.api_keys import api_key_hash, issue_api_key
from chatrelay.auth.passwords import hash_password
from chatrelay.auth.sessions import COOKIE_NAME
from chatrelay.store import costs, users
from chatrelay.store.models import AttemptCostRow, User, utcnow
from chatrelay.upstreams.pricing import money
from tests.conftest import RunningRelay
from tests.e2e.test_fuzz_api import Callers, _fuzz
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import MODEL, FakeUpstream, livepeer_events

PASSWORD = "correct horse battery"
D1, D2, D3 = (datetime(2026, 3, day, tzinfo=UTC) for day in (1, 2, 3))
RANGE = {"since": "2026-03-01", "until": "2026-03-02"}  # until: the day is included


async def make_user(
    relay: RunningRelay, username: str, *, admin: bool = False, key_name: str = "tests"
) -> tuple[str, str, str]:
    """An account with a password and an API key: (user id, key, key id)."""
    issued = issue_api_key()
    password_hash = await hash_password(PASSWORD)
    async with relay.context.db.transaction() as session:
        user = await users.create_user(
            session, username=username, password_hash=password_hash, is_admin=admin
        )
        key = await users.create_api_key(
            session, user_id=user.id, name=key_name, key_hash=issued.key_hash, prefix=issued.prefix
        )
    return user.id, issued.key, key.id


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def attempt(created_at: datetime, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "user_id": None,
        "api_key_id": None,
        "message_id": None,
        "kind": "answer",
        "model": "m1",
        "upstream": "lp",
        "billing": "requested",
        "accepted": True,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "requested_tokens": 0,
        "paid_tokens": 0,
        "paid_cost": None,
        "used_cost": None,
        "currency": "USD",
        "created_at": created_at,
    }
    return {**row, **fields}


async def seed(relay: RunningRelay) -> dict[str, str]:
    """Two users (alice with two keys), the operator's warming, two currencies, a failover
    and an unpriced attempt, over two days (and one row the day after)."""
    alice, _, key_a = await make_user(relay, "alice", key_name="laptop")
    bob, _, key_b = await make_user(relay, "bob", key_name="=HYPERLINK(1)")
    rows = [
        # alice's answer m1 on key A: a failover, so two attempts, each paid for.
        attempt(D1.replace(hour=10), user_id=alice, api_key_id=key_a, message_id="m1",
                prompt_tokens=10, completion_tokens=4, requested_tokens=50, paid_tokens=60,
                paid_cost=1000, used_cost=400),
        attempt(D1.replace(hour=10, minute=1), user_id=alice, api_key_id=key_a,
                message_id="m1", upstream="lp2", prompt_tokens=10, completion_tokens=6,
                requested_tokens=46, paid_tokens=56, paid_cost=2000, used_cost=500),
        # alice's answer m2 from the page (no key) on an upstream without a price.
        attempt(D2.replace(hour=9), user_id=alice, message_id="m2", billing="used",
                prompt_tokens=5, completion_tokens=5, requested_tokens=100, paid_tokens=10),
        # bob's answer in euros, the last second of the day.
        attempt(D2.replace(hour=23, minute=59, second=59), user_id=bob, api_key_id=key_b,
                message_id="m3", model="m2", upstream="oa", billing="used", prompt_tokens=20,
                completion_tokens=10, requested_tokens=100, paid_tokens=30, paid_cost=3000,
                used_cost=3000, currency="EUR"),
        # The operator warming a model at midnight.
        attempt(D1, kind="warming", prompt_tokens=1, completion_tokens=1, requested_tokens=1,
                paid_tokens=2, paid_cost=500, used_cost=500),
        # Out of range: the day after.
        attempt(D3, user_id=alice, message_id="m4", paid_cost=7, used_cost=7),
    ]  # fmt: skip
    await relay.context.db.write(partial(costs.record_costs, rows=rows))
    return {"alice": alice, "bob": bob, "key_a": key_a, "key_b": key_b}


def figures(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["currency"],
        row["answers"],
        row["attempts"],
        row["prompt_tokens"],
        row["completion_tokens"],
        row["requested_tokens"],
        row["paid_tokens"],
        row["paid"],
        row["used"],
        row["difference"],
        row["unpriced_attempts"],
    )


async def admin_get(relay: RunningRelay, key: str, **params: Any) -> httpx.Response:
    return await relay.client.get("/api/admin/usage", params=params, headers=bearer(key))


async def test_usage_grouped_every_way(relay_for, database_url: str) -> None:
    async with relay_for(database_url=database_url) as relay:
        ids = await seed(relay)
        _, key, _ = await make_user(relay, "boss", admin=True)
        answers = {
            group: await admin_get(relay, key, group_by=group, **RANGE)
            for group in ("day", "user", "key", "model", "upstream")
        }
        default = await admin_get(relay, key, **RANGE)
    bodies = {group: response.json() for group, response in answers.items()}
    assert {r.status_code for r in answers.values()} == {200}
    assert default.json()["group_by"] == "day"
    assert bodies["day"]["since"] == "2026-03-01T00:00:00+00:00"
    assert bodies["day"]["until"] == "2026-03-03T00:00:00+00:00"
    assert bodies["day"]["truncated"] is False

    day = bodies["day"]["rows"]
    assert [(r["key"], r["day"]) for r in day] == [
        ("2026-03-01", "2026-03-01"),
        ("2026-03-02", "2026-03-02"),
        ("2026-03-02", "2026-03-02"),
    ]
    # The failover's two attempts and the warming: one answer, every token and cost summed.
    assert figures(day[0]) == (
        "USD", 1, 3, 21, 11, 97, 118, money(3500), money(1400), money(2100), 0
    )  # fmt: skip
    assert figures(day[1]) == ("EUR", 1, 1, 20, 10, 100, 30, money(3000), money(3000), 0.0, 0)
    # Unpriced: unknown, never zero.
    assert figures(day[2]) == ("USD", 1, 1, 5, 5, 100, 10, None, None, None, 1)

    user = bodies["user"]["rows"]
    assert [(r["key"], r["user_id"], r["username"]) for r in user] == [
        (ids["alice"], ids["alice"], "alice"),
        (ids["bob"], ids["bob"], "bob"),
        ("operator", None, None),
    ]
    # Paid is what is known (the unpriced attempt is counted apart).
    assert figures(user[0]) == (
        "USD", 2, 3, 25, 15, 196, 126, money(3000), money(900), money(2100), 1
    )  # fmt: skip
    assert figures(user[2])[1:3] == (0, 1)  # warming: no answer, one attempt

    key_rows = bodies["key"]["rows"]
    assert [(r["key"], r["key_name"], r["username"]) for r in key_rows] == [
        (ids["key_a"], "laptop", "alice"),
        (ids["key_b"], "=HYPERLINK(1)", "bob"),
        ("none", None, None),
    ]
    assert key_rows[0]["key_prefix"].startswith("cr_") and key_rows[0]["user_id"] == ids["alice"]
    # Without a key: alice's page answer (unpriced) and the warming (priced).
    assert figures(key_rows[2]) == ("USD", 1, 2, 6, 6, 101, 12, money(500), money(500), 0.0, 1)

    model = bodies["model"]["rows"]
    assert [(r["model"], r["currency"], r["paid"]) for r in model] == [
        ("m1", "USD", money(3500)),
        ("m2", "EUR", money(3000)),
    ]
    upstream = bodies["upstream"]["rows"]
    assert [(r["upstream"], r["paid"], r["used"], r["unpriced_attempts"]) for r in upstream] == [
        ("oa", money(3000), money(3000), 0),
        ("lp2", money(2000), money(500), 0),
        ("lp", money(1500), money(900), 1),
    ]


async def test_usage_filters(relay_for, database_url: str) -> None:
    async with relay_for(database_url=database_url) as relay:
        ids = await seed(relay)
        _, key, _ = await make_user(relay, "boss", admin=True)

        async def paid_by_day(**params: Any) -> list[tuple[str, str, float | None]]:
            response = await admin_get(relay, key, **{**RANGE, **params})
            assert response.status_code == 200, response.text
            return [(r["day"], r["currency"], r["paid"]) for r in response.json()["rows"]]

        by_name = await paid_by_day(user="Alice")  # usernames are case-insensitive
        by_id = await paid_by_day(user=ids["bob"])
        operator = await paid_by_day(user="operator")
        by_model = await paid_by_day(model="m2")
        by_upstream = await paid_by_day(upstream="lp2")
        warming = await paid_by_day(kind="warming")
        answers = await paid_by_day(kind="answer", upstream="lp")
        # Datetimes: since included, until excluded; any offset, UTC without one.
        until_noon = await paid_by_day(until="2026-03-02T12:00:00Z")
        after_ten = await paid_by_day(since="2026-03-01T11:00:30+01:00")
        one_day = await paid_by_day(since="2026-03-03", until="2026-03-03")
        # A deleted user's id still filters: the ledger outlives its users.
        gone = await paid_by_day(user="usr_gone")
    assert by_name == [("2026-03-01", "USD", money(3000)), ("2026-03-02", "USD", None)]
    assert by_id == [("2026-03-02", "EUR", money(3000))]
    assert operator == [("2026-03-01", "USD", money(500))]
    assert by_model == by_id
    assert by_upstream == [("2026-03-01", "USD", money(2000))]
    assert warming == operator
    assert answers == [("2026-03-01", "USD", money(1000)), ("2026-03-02", "USD", None)]
    assert until_noon == [("2026-03-01", "USD", money(3500)), ("2026-03-02", "USD", None)]
    assert after_ten == [
        ("2026-03-01", "USD", money(2000)),
        ("2026-03-02", "EUR", money(3000)),
        ("2026-03-02", "USD", None),
    ]
    assert one_day == [("2026-03-03", "USD", money(7))]
    assert gone == []


async def test_usage_as_csv(relay_for) -> None:
    async with relay_for() as relay:
        await seed(relay)
        _, key, _ = await make_user(relay, "boss", admin=True)
        response = await admin_get(relay, key, group_by="key", format="csv", **RANGE)
        by_day = await admin_get(relay, key, format="csv", **RANGE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        'attachment; filename="chatrelay-usage-key-20260301-20260303.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "key", "api_key_id", "key_name", "key_prefix", "user_id", "username", "currency",
        "answers", "attempts", "prompt_tokens", "completion_tokens", "requested_tokens",
        "paid_tokens", "paid", "used", "difference", "unpriced_attempts",
    ]  # fmt: skip
    laptop, formula, none = rows[1:]
    # Money exact, in units with nine decimals; a spreadsheet sees no formula in a name.
    assert laptop[2] == "laptop" and laptop[13:16] == ["0.000003000", "0.000000900", "0.000002100"]
    assert formula[2] == "'=HYPERLINK(1)" and formula[6] == "EUR"
    assert none[0] == "none" and none[13] == "0.000000500" and none[16] == "1"
    day_rows = list(csv.reader(io.StringIO(by_day.text)))
    assert day_rows[0][:2] == ["day", "currency"]
    # Unknown stays empty, never 0.
    assert day_rows[3][:2] == ["2026-03-02", "USD"] and day_rows[3][8:] == ["", "", "", "1"]


async def test_usage_rows_are_bounded(relay_for) -> None:
    async with relay_for() as relay:
        await seed(relay)
        _, key, _ = await make_user(relay, "boss", admin=True)
        two = await admin_get(relay, key, group_by="upstream", limit=2, **RANGE)
        # By default, the last 30 days up to today, whatever is in them.
        default = await admin_get(relay, key)
    assert [r["upstream"] for r in two.json()["rows"]] == ["oa", "lp2"]
    assert two.json()["truncated"] is True
    body = default.json()
    assert body["rows"] == []
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert (until - since).days == 30 and since <= utcnow() < until


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"since": "yesterday"}, 400, "invalid_date"),
        ({"until": "2026-02-30"}, 400, "invalid_date"),
        ({"until": "9999-12-31"}, 400, "invalid_date"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, 400, "invalid_range"),
        ({"since": "2024-01-01", "until": "2026-01-01"}, 400, "range_too_long"),
        ({"user": "nobody"}, 400, "unknown_user"),
        ({"group_by": "week"}, 422, "invalid_field"),
        ({"kind": "other"}, 422, "invalid_field"),
        ({"format": "xml"}, 422, "invalid_field"),
        ({"limit": 0}, 422, "invalid_field"),
        ({"limit": 10_001}, 422, "invalid_field"),
        ({"model": "a\x00b"}, 422, "invalid_field"),
    ],
)
async def test_bad_usage_requests_are_said(
    relay_for, params: dict[str, Any], status: int, code: str
) -> None:
    async with relay_for() as relay:
        _, key, _ = await make_user(relay, "boss", admin=True)
        response = await admin_get(relay, key, **params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_real_answers_show_in_the_usage_and_the_lists(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["Hello", " there"])
    upstreams = [
        {"name": "lp", "dialect": "livepeer", "base_url": fake.base_url, "models": [MODEL],
         "input_price": 0.5, "output_price": 2.0},
    ]  # fmt: skip
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        key, user_id = await api_key(relay, "carol")
        _, admin, _ = await make_user(relay, "boss", admin=True)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100
            )
        async with relay.context.db.read() as session:
            [row] = list(await session.scalars(select(AttemptCostRow)))
        by_user = await admin_get(relay, admin, group_by="user")
        by_key = await admin_get(relay, admin, group_by="key")
        by_upstream = await admin_get(relay, admin, group_by="upstream")
        listed = await relay.client.get("/api/admin/users", headers=bearer(admin))
        keys = await relay.client.get("/api/admin/keys", headers=bearer(admin))
        performance = await relay.client.get("/api/admin/upstreams", headers=bearer(admin))
    [user] = by_user.json()["rows"]
    assert (user["username"], user["answers"], user["attempts"]) == ("carol", 1, 1)
    assert user["paid"] == money(row.paid_cost) and user["used"] == money(row.used_cost)
    assert user["paid"] > user["used"]  # Livepeer bills the 100 tokens requested
    assert user["requested_tokens"] == 100 and user["completion_tokens"] == 2
    [key_row] = by_key.json()["rows"]
    assert (key_row["key_name"], key_row["username"]) == ("tests", "carol")
    [upstream] = by_upstream.json()["rows"]
    assert (upstream["upstream"], upstream["paid"]) == ("lp", money(row.paid_cost))

    body = listed.json()
    assert body["period"] == "day" and body["has_more"] is False
    accounts = {u["username"]: u for u in body["data"]}
    assert list(accounts) == ["boss", "carol"]  # by username; guests are not listed
    carol = accounts["carol"]
    assert carol["id"] == user_id and carol["is_admin"] is False and carol["disabled"] is False
    assert carol["token_budget"] is None and carol["token_budget_effective"] == 0
    assert carol["spend_limit"] is None and carol["spend_limit_effective"] == 0
    assert carol["tokens_used"] == row.prompt_tokens + row.completion_tokens
    assert carol["spent"] == [
        {"currency": "USD", "paid": money(row.paid_cost), "unpriced_attempts": 0}
    ]
    assert accounts["boss"]["is_admin"] is True and accounts["boss"]["spent"] == []
    # How the upstream served (docs/spending.md), over the last day by default.
    assert performance.json()["window_seconds"] == 86400
    [served] = performance.json()["data"]
    assert (served["upstream"], served["model"], served["answers"]) == ("lp", MODEL, 1)
    assert served["paid"] == money(row.paid_cost) and served["useful_tokens"] == 2
    listed_keys = {k["username"]: k for k in keys.json()["data"]}
    assert listed_keys["carol"]["spent"] == carol["spent"]
    assert listed_keys["carol"]["revoked"] is False and listed_keys["boss"]["spent"] == []


async def test_an_admins_changes_take_effect_at_the_next_request(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(user_spend_limit=10.0) as relay:
        alice, key, _ = await make_user(relay, "alice")
        _, admin, _ = await make_user(relay, "boss", admin=True)
        client = relay.client
        url = f"/api/admin/users/{alice}"

        async def ask() -> httpx.Response:
            return await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
                headers=bearer(key),
            )

        assert (await ask()).status_code == 200  # her key is in the credential cache now
        budget = await client.patch(url, json={"token_budget": 1}, headers=bearer(admin))
        refused = await ask()
        limit = await client.patch(url, json={"spend_limit": 2.5}, headers=bearer(admin))
        async with relay.context.db.read() as session:
            stored = await session.get(User, alice)
        restored = await client.patch(
            url, json={"token_budget": None, "spend_limit": None}, headers=bearer(admin)
        )
        again = await ask()
        nothing = await client.patch(url, json={}, headers=bearer(admin))
    assert budget.status_code == 200, budget.text
    assert budget.json()["token_budget"] == 1 and budget.json()["token_budget_effective"] == 1
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert limit.json()["spend_limit"] == 2.5 and limit.json()["token_budget"] == 1
    assert limit.json()["spend_limit_effective"] == 2.5
    assert stored is not None and stored.spend_limit == 2_500_000_000  # nanos
    assert restored.json()["token_budget"] is None and restored.json()["spend_limit"] is None
    assert restored.json()["spend_limit_effective"] == 10.0  # CHATRELAY_USER_SPEND_LIMIT
    assert again.status_code == 200
    assert nothing.status_code == 200 and nothing.json()["id"] == alice


async def test_a_disabled_user_is_refused_at_once(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        alice, key, _ = await make_user(relay, "alice")
        _, admin, _ = await make_user(relay, "boss", admin=True)
        url = f"/api/admin/users/{alice}"
        async with (
            httpx.AsyncClient(base_url=relay.url) as browser,
            httpx.AsyncClient(base_url=relay.url) as other_browser,
        ):
            login = {"username": "alice", "password": PASSWORD}
            assert (await browser.post("/api/auth/login", json=login)).status_code == 200
            # Both credentials looked up once: the credential cache remembers them now.
            assert (await browser.get("/api/me")).json()["username"] == "alice"
            assert (await relay.client.get("/api/me", headers=bearer(key))).status_code == 200

            disabled = await relay.client.patch(url, json={"disabled": True}, headers=bearer(admin))
            by_key = await relay.client.get("/api/me", headers=bearer(key))
            chat = await relay.client.post(
                "/api/chat", json={"messages": [{"role": "user", "content": "hi"}]},
                headers=bearer(key),
            )  # fmt: skip
            by_session = await browser.get("/api/me")
            after = await browser.get("/api/me")  # the cookie went with the refusal
            # A guest's chat, then a sign-in to the disabled account: refused before the
            # guest's conversations would move to it.
            guest_chat = await other_browser.post(
                "/api/chat", json={"messages": [{"role": "user", "content": "mine"}]}
            )
            sign_in = await other_browser.post("/api/auth/login", json=login)
            still_guests = (await other_browser.get("/api/conversations")).json()["data"]
            twice = await relay.client.patch(url, json={"disabled": True}, headers=bearer(admin))

            enabled = await relay.client.patch(url, json={"disabled": False}, headers=bearer(admin))
            back = await relay.client.get("/api/me", headers=bearer(key))
            signed_in = await other_browser.post("/api/auth/login", json=login)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    for refused in (by_key, chat, by_session, sign_in):
        assert refused.status_code == 401, refused.text
        error = refused.json()["error"]
        assert error["code"] == "account_disabled"
        assert "disabled by an administrator" in error["message"]
    assert f"{COOKIE_NAME}=;" in by_session.headers["set-cookie"]
    assert after.status_code == 200 and after.json()["id"] is None
    # No session for a disabled account, and the guest keeps its conversation.
    assert guest_chat.status_code == 200
    assert "set-cookie" not in sign_in.headers
    assert [c["title"] for c in still_guests] == ["mine"]
    # Disabled twice: the first time stays on record.
    assert twice.json()["disabled_at"] == disabled.json()["disabled_at"]
    assert enabled.json()["disabled"] is False and enabled.json()["disabled_at"] is None
    assert back.status_code == 200 and back.json()["username"] == "alice"
    assert signed_in.status_code == 200


async def test_revoking_a_key_takes_effect_at_once(relay_for) -> None:
    async with relay_for() as relay:
        _, key, key_id = await make_user(relay, "alice")
        _, admin, _ = await make_user(relay, "boss", admin=True)
        client = relay.client
        assert (await client.get("/api/me", headers=bearer(key))).status_code == 200  # cached
        revoked = await client.post(f"/api/admin/keys/{key_id}/revoke", headers=bearer(admin))
        refused = await client.get("/api/me", headers=bearer(key))
        again = await client.post(f"/api/admin/keys/{key_id}/revoke", headers=bearer(admin))
        unknown = await client.post("/api/admin/keys/key_nope/revoke", headers=bearer(admin))
        listed = await client.get("/api/admin/keys", headers=bearer(admin))
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True and revoked.json()["username"] == "alice"
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "api_key_not_found"
    by_owner = {k["username"]: k["revoked"] for k in listed.json()["data"]}
    assert by_owner == {"alice": True, "boss": False}


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        (b'{"token_budget": -1}', {}, 422, "token_budget"),
        (b'{"token_budget": "5"}', {}, 422, "token_budget"),
        (b'{"token_budget": 2147483648}', {}, 422, "token_budget"),
        (b'{"spend_limit": -0.5}', {}, 422, "spend_limit"),
        (b'{"spend_limit": 1e10}', {}, 422, "spend_limit"),
        (b'{"disabled": "yes"}', {}, 422, "disabled"),
        (b'{"disabled": null}', {}, 422, "disabled"),
        (b'{"budget": 5}', {}, 422, "budget"),
        (b"[]", {}, 422, "body"),
        (b"{not json", {}, 400, None),
        (b'{"disabled": true}', {"Content-Type": "text/plain"}, 422, "body"),
    ],
)
async def test_bad_changes_are_said(
    relay_for, body: bytes, headers: dict[str, str], status: int, param: str | None
) -> None:
    async with relay_for() as relay:
        alice, _, _ = await make_user(relay, "alice")
        _, admin, _ = await make_user(relay, "boss", admin=True)
        response = await relay.client.patch(
            f"/api/admin/users/{alice}",
            content=body,
            headers={"Content-Type": "application/json", **headers, **bearer(admin)},
        )
    assert response.status_code == status, response.text
    assert response.json()["error"].get("param") == param


async def test_an_admin_cannot_disable_themselves_nor_unknown_users(relay_for) -> None:
    async with relay_for() as relay:
        boss, admin, _ = await make_user(relay, "boss", admin=True)
        self_disable = await relay.client.patch(
            f"/api/admin/users/{boss}", json={"disabled": True}, headers=bearer(admin)
        )
        unknown = await relay.client.patch(
            "/api/admin/users/usr_nope", json={"token_budget": 5}, headers=bearer(admin)
        )
    assert self_disable.status_code == 409
    assert self_disable.json()["error"]["code"] == "cannot_disable_self"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "user_not_found"


async def test_an_admin_by_session_cookie_and_csrf(relay_for) -> None:
    async with relay_for() as relay:
        alice, _, _ = await make_user(relay, "alice")
        await make_user(relay, "boss", admin=True)
        async with httpx.AsyncClient(base_url=relay.url) as browser:
            login = {"username": "boss", "password": PASSWORD}
            assert (await browser.post("/api/auth/login", json=login)).status_code == 200
            usage = await browser.get("/api/admin/usage")
            url = f"/api/admin/users/{alice}"
            foreign = await browser.patch(
                url, json={"disabled": True}, headers={"Origin": "https://evil.example"}
            )
            own = await browser.patch(url, json={"disabled": True}, headers={"Origin": relay.url})
    assert usage.status_code == 200 and usage.json()["group_by"] == "day"
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "csrf_rejected"
    assert own.status_code == 200 and own.json()["disabled"] is True


async def test_everyone_else_gets_the_404_of_an_unknown_path(relay_for) -> None:
    async with relay_for() as relay:
        alice, key, key_id = await make_user(relay, "alice")
        former, former_key, _ = await make_user(relay, "former", admin=True)
        boss, admin, _ = await make_user(relay, "boss", admin=True)
        client = relay.client
        async with httpx.AsyncClient(base_url=relay.url) as guest:
            assert (await guest.post("/api/auth/guest")).status_code == 201
            guest_cookie = guest.cookies[COOKIE_NAME]
        async with httpx.AsyncClient(base_url=relay.url) as browser:
            login = {"username": "alice", "password": PASSWORD}
            assert (await browser.post("/api/auth/login", json=login)).status_code == 200
            user_cookie = browser.cookies[COOKIE_NAME]
        disabled = await client.patch(
            f"/api/admin/users/{former}", json={"disabled": True}, headers=bearer(admin)
        )
        assert disabled.status_code == 200

        callers: dict[str, dict[str, Any]] = {
            "anonymous": {},
            "guest": {"cookies": {COOKIE_NAME: guest_cookie}},
            "user by key": {"headers": bearer(key)},
            "user by session": {"cookies": {COOKIE_NAME: user_cookie}},
            "unknown key": {"headers": bearer("cr_not_a_key")},
            "disabled admin": {"headers": bearer(former_key)},
        }
        patch = {"json": {"disabled": True}}
        broken = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
        probes: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/api/admin/usage", {}),
            ("GET", "/api/admin/usage?group_by=week&since=never", {}),
            ("GET", "/api/admin/usage?format=csv", {}),
            ("HEAD", "/api/admin/usage", {}),
            ("GET", "/api/admin/usage/", {}),
            ("GET", "/api/admin/users", {}),
            ("GET", "/api/admin/keys", {}),
            ("GET", "/api/admin/upstreams", {}),
            ("PATCH", f"/api/admin/users/{alice}", patch),
            ("PATCH", f"/api/admin/users/{boss}", broken),
            ("GET", f"/api/admin/users/{alice}", {}),
            ("DELETE", f"/api/admin/users/{alice}", {}),
            ("POST", f"/api/admin/keys/{key_id}/revoke", {}),
            ("GET", f"/api/admin/keys/{key_id}/revoke", {}),
            ("GET", "/api/admin/nothing", {}),
            ("GET", "/admin", {}),
            ("HEAD", "/admin", {}),
            ("POST", "/admin", patch),
            ("GET", "/admin/", {}),
            ("GET", "/admin/users", {}),
        ]

        async def answer(
            method: str, path: str, caller: dict[str, Any], extra: dict[str, Any]
        ) -> tuple[Any, ...]:
            headers = {**caller.get("headers", {}), **extra.get("headers", {})}
            body = {name: value for name, value in extra.items() if name != "headers"}
            async with httpx.AsyncClient(
                base_url=relay.url, cookies=caller.get("cookies", {})
            ) as someone:
                response = await someone.request(method, path, headers=headers, **body)
            # What tells a route from an unknown path: status, type, body, Allow, Location.
            return (
                response.status_code,
                response.headers.get("content-type"),
                response.content,
                response.headers.get("allow"),
                response.headers.get("location"),
                response.headers.get("set-cookie"),
            )

        different: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        for method, path, extra in probes:
            unknown = await answer(method, "/no/such/path", {}, extra)
            assert unknown[0] == 404
            for who, caller in callers.items():
                got = await answer(method, path, caller, extra)
                if got != unknown:
                    different[who, method, path] = got
        async with relay.context.db.read() as session:
            still = await session.get(User, alice)
            alive = await users.get_api_key_user(session, key_hash=api_key_hash(key))
    assert different == {}
    assert still is not None and still.disabled_at is None
    assert alive is not None  # nobody revoked alice's key


ADMIN_OPERATIONS = [
    ("GET", "/api/admin/usage"),
    ("GET", "/api/admin/users"),
    ("GET", "/api/admin/upstreams"),
    ("PATCH", "/api/admin/users/{user_id}"),
    ("GET", "/api/admin/keys"),
    ("POST", "/api/admin/keys/{key_id}/revoke"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_OPERATIONS)
async def test_fuzzed_as_an_admin(
    relay_for, fake: FakeUpstream, database_url: str, method: str, path: str
) -> None:
    """test_fuzz_api.py sends its requests as a user, a guest and a stranger, who all get a
    404 here: the same fuzzing, with an admin's key as the key, reaches the routes' code."""
    fake.script = livepeer_events(["ok"])
    postgres = database_url.startswith("postgresql")
    async with relay_for(database_url=database_url) as relay:
        await seed(relay)
        _, admin, _ = await make_user(relay, "boss", admin=True)
        guest = await relay.client.post("/api/auth/guest")
        callers = Callers(
            key=admin,
            guest_cookie=guest.cookies[COOKIE_NAME],
            conversation_id="conv_none",
            message_id="msg_none",
        )
        seen = await asyncio.to_thread(_fuzz, relay.url, method, path, callers, postgres=postgres)
    statuses = {status for counts in seen.values() for status in counts}
    print(f"{method} {path}: {seen}")
    if "{key_id}" not in path:  # (a made-up key id is a 404 for an admin too)
        assert statuses & {200, 400, 409, 422}, seen  # the admin's requests got past the 404
