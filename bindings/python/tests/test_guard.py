"""`@baton.guard`: authorize, hold, run, commit; release when the tool raises."""

from __future__ import annotations

import asyncio

import pytest

import baton


@pytest.fixture
def setup(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 100}], tools=["tool.*"])
    verifier = baton.Verifier(ledger.keyset())
    return token, verifier


def counters(ledger, token):
    b = ledger.balances(token)[0]
    return b["held"], b["spent"]


def test_guard_charges_and_releases_on_exception(setup, ledger):
    token, verifier = setup
    calls = []

    @baton.guard("tool.lookup", verifier=verifier, ledger=ledger,
                 resource=lambda a: f"doc:{a.doc}", cost=lambda a: a.pages,
                 actual=lambda result, a: len(result))
    def lookup(doc: int, pages: int = 5, fail: bool = False) -> list:
        calls.append(doc)
        if fail:
            raise RuntimeError("downstream broke")
        return ["p1", "p2"]

    with baton.use_token(token):
        assert lookup(7) == ["p1", "p2"]
        assert counters(ledger, token) == (0, 2)  # actual, not the estimate
        with pytest.raises(RuntimeError):
            lookup(8, pages=9, fail=True)
        assert counters(ledger, token) == (0, 2)  # released
    assert calls == [7, 8]
    # No token, or a token that does not allow the action: the tool never runs.
    with pytest.raises(baton.Denied) as e:
        lookup(9)
    assert e.value.code == "missing_token"
    narrow = baton.Token.from_text(token).attenuate(tools="tool.other")
    with baton.use_token(narrow), pytest.raises(baton.Denied) as e:
        lookup(10)
    assert e.value.code == "action_not_allowed"
    assert calls == [7, 8]


def test_guard_without_a_cost_only_authorizes(setup, ledger):
    token, verifier = setup

    @baton.guard("tool.ping", verifier=verifier, token=lambda a: a.token)
    def ping(token: str) -> str:
        return "pong"

    assert ping(token) == "pong"
    with pytest.raises(baton.InvalidToken):
        ping("baton_v1_garbage")
    with pytest.raises(ValueError):
        baton.guard("tool.x", verifier=verifier, cost=1)


def test_guard_on_coroutines(setup, ledger, server):
    token, verifier = setup
    aledger = baton.AsyncLedger(server.url)

    @baton.guard("tool.fetch", verifier=verifier, ledger=aledger, cost=3)
    async def fetch(fail: bool = False) -> str:
        if fail:
            raise KeyError("missing")
        return "ok"

    async def main():
        with baton.use_token(token):
            assert await fetch() == "ok"
            with pytest.raises(KeyError):
                await fetch(fail=True)

    asyncio.run(main())
    assert counters(ledger, token) == (0, 3)
