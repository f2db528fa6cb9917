"""The ledger client, blocking and asyncio, against a real `baton serve`."""

from __future__ import annotations

import asyncio
import time

import pytest

import baton


def held_and_spent(ledger, token):
    b = ledger.balances(token)[0]
    return b["held"], b["spent"]


def test_reserve_commit_release_extend(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])
    r = ledger.reserve(token, "tool.run", 3, "calls")
    assert r["state"] == "active" and r["amount"] == 3 and r["id"].startswith("rsv_")
    assert held_and_spent(ledger, token) == (3, 0)
    r2 = ledger.extend(token, r["id"], 120)
    assert r2["expires_at_ms"] > r["expires_at_ms"]
    done = ledger.commit(token, r["id"], 2)
    assert done["state"] == "committed" and done["charged"] == 2
    assert held_and_spent(ledger, token) == (0, 2)
    r = ledger.reserve(token, "tool.run", 4)
    assert ledger.release(token, r["id"])["state"] == "released"
    assert ledger.reservation(token, r["id"])["state"] == "released"
    assert ledger.spend(token, "tool.run", 1)["state"] == "committed"
    assert held_and_spent(ledger, token) == (0, 3)


def test_one_idempotency_key_applies_once(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])
    a = ledger.reserve(token, "tool.run", 2, idempotency_key="py-req-1")
    b = ledger.reserve(token, "tool.run", 2, idempotency_key="py-req-1")
    assert a["id"] == b["id"]
    assert held_and_spent(ledger, token) == (2, 0)
    with pytest.raises(baton.LedgerError) as e:
        ledger.reserve(token, "tool.run", 3, idempotency_key="py-req-1")
    assert e.value.status == 409 and e.value.code == "idempotency_mismatch"


def test_ledger_errors_carry_code_and_status(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 5}])
    with pytest.raises(baton.InsufficientBudget) as e:
        ledger.reserve(token, "tool.run", 6)
    assert e.value.code == "insufficient_budget" and e.value.status == 402
    assert e.value.remaining == 5 and e.value.scope["unit"] == "calls"
    with pytest.raises(baton.LedgerError) as e:
        ledger.reserve(token, "other.run", 1)
    assert e.value.code == "action_not_allowed" and e.value.status == 403
    with pytest.raises(ValueError):
        ledger.reserve(token, "tool.run", 2**64)
    with pytest.raises(TypeError):
        ledger.reserve(token, "tool.run", "1")
    with pytest.raises(baton.LedgerUnavailable) as e:
        baton.Ledger("http://127.0.0.1:9", retries=1, timeout=1.0).keys()
    assert e.value.code == "ledger_unreachable"


def test_hold_commits_or_releases(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])
    with ledger.hold(token, action="tool.run", amount=4, unit="calls") as h:
        assert held_and_spent(ledger, token) == (4, 0)
        h.commit(3)
    assert held_and_spent(ledger, token) == (0, 3)
    with pytest.raises(RuntimeError):
        with ledger.hold(token, action="tool.run", amount=4) as h:
            raise RuntimeError("the tool failed")
    assert h.reservation["state"] == "released"
    assert held_and_spent(ledger, token) == (0, 3)
    with ledger.hold(token, action="tool.run", amount=2):
        pass  # no explicit commit: the amount held is charged
    assert held_and_spent(ledger, token) == (0, 5)


def test_revoke_and_the_feed(server, ledger):
    root_text = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])
    keyset = ledger.keyset()
    verifier = baton.Verifier(keyset)
    child = baton.Token.from_text(root_text).attenuate(tools="tool.run")
    verifier.authorize(child.to_text(), "tool.run")
    feed = verifier.follow_revocations(ledger, server.admin, interval=0.1)
    start = ledger.revocations(server.admin)["next"]
    r = ledger.revoke(root_text, child.block_id, target=child)
    assert r["new"] and r["block_id"] == child.block_id
    page = ledger.revocations(server.admin, after=start)
    assert [e["block_id"] for e in page["revocations"]] == [child.block_id]
    deadline = time.monotonic() + 10
    while True:
        try:
            verifier.authorize(child.to_text(), "tool.run")
        except baton.InvalidToken as e:
            assert e.code == "revoked"
            break
        assert time.monotonic() < deadline, "the feed never applied the revocation"
        time.sleep(0.05)
    assert feed.fresh and feed.last_error is None
    feed.stop()
    with pytest.raises(baton.LedgerError) as e:
        ledger.reserve(child, "tool.run", 1)
    assert e.value.code == "revoked"


def test_asyncio(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])

    async def main():
        a = baton.AsyncLedger(server.url)
        assert await a.ready()
        r = await a.reserve(token, "tool.run", 2)
        await a.commit(token, r["id"], 1)
        async with a.hold(token, "tool.run", 3) as h:
            await h.commit(2)
        with pytest.raises(ValueError):
            async with a.hold(token, "tool.run", 3):
                raise ValueError("boom")
        results = await asyncio.gather(*[a.spend(token, "tool.run", 1) for _ in range(3)])
        assert all(r["state"] == "committed" for r in results)
        with pytest.raises(baton.InsufficientBudget):
            await a.reserve(token, "tool.run", 100)
        return (await a.balances(token))[0]

    b = asyncio.run(main())
    assert (b["held"], b["spent"]) == (0, 6)


def test_allocation_is_guaranteed_and_its_unused_part_comes_back(server, ledger):
    root_text = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 100}])
    root = baton.Token.from_text(root_text)
    child = root.attenuate(budget={"calls": 30})
    sibling = root.attenuate(budget={"calls": 100})
    a = ledger.allocate(root, child, "calls", amount=20, idempotency_key="alloc-1")
    assert a["id"].startswith("alc_") and a["state"] == "active"
    assert (a["amount"], a["unused"], a["overflow"]) == (20, 20, "deny")
    # Idempotent: the same key gives the same allocation.
    assert ledger.allocate(root, child, "calls", amount=20, idempotency_key="alloc-1")["id"] == a["id"]
    assert [x["id"] for x in ledger.allocations(root)] == [a["id"]]
    # A greedy sibling gets the rest of the pool, never the allocation.
    with pytest.raises(baton.InsufficientBudget):
        ledger.reserve(sibling, "tool.run", 81)
    ledger.reserve(sibling, "tool.run", 80)
    r = ledger.reserve(child, "tool.run", 20)
    # Overflow `deny`: past its allocation the child is refused, and told
    # which allocation ran out.
    with pytest.raises(baton.LedgerError) as refused:
        ledger.reserve(child, "tool.run", 1)
    e = refused.value
    assert (e.code, e.status, e.allocation_id, e.remaining) == ("allocation_exhausted", 402, a["id"], 0)
    ledger.commit(child, r["id"], 5)
    done = ledger.release_allocation(root, a["id"])
    assert (done["state"], done["charged"], done["returned"]) == ("released", 5, 15)
    assert ledger.allocation(root, a["id"])["state"] == "released"
    assert ledger.allocations(root) == []
    # Bad input is refused before any request.
    with pytest.raises(ValueError):
        ledger.allocate(root, child, "calls", amount=1, fraction=0.5)
    with pytest.raises(ValueError):
        ledger.allocate(root, child, "calls")
    with pytest.raises(ValueError):
        ledger.allocate(root, child, "calls", fraction=1.5)
    with pytest.raises(TypeError):
        ledger.allocate(root, child, "calls", fraction="half")
    with pytest.raises(ValueError):
        ledger.allocate(root, child, "calls", amount=2**64)
    with pytest.raises(ValueError):
        ledger.allocate(root, child, "calls", amount=1, overflow="maybe")
    with pytest.raises(ValueError):
        ledger.allocation(root, "rsv_not_an_allocation")

    async def main():
        al = baton.AsyncLedger(server.url)
        b = await al.allocate(root, child, "calls", fraction=0.5, overflow="shared")
        assert b["overflow"] == "shared" and b["unused"] > 0
        return await al.release_allocation(root, b["id"])

    released = asyncio.run(main())
    assert released["state"] == "released" and released["returned"] == released["amount"]
