"""The spend ledger's client: ``Ledger`` (blocking) and ``AsyncLedger`` (asyncio).

Both run on the Rust client (``baton::client``): answers are dicts in the
shape of spec/http.md §6; errors are ``LedgerError`` with the ledger's
reason ``code`` and HTTP ``status``. A request that got no answer, or a
503/408, is retried with the **same** idempotency key and body, so a lost
answer never charges twice. Pass your own ``idempotency_key`` to make a
retry of the whole call (after a crash, say) safe too.
"""

from __future__ import annotations

import secrets
from typing import Any, Mapping, Optional, Union

from ._baton import LedgerCore, Token, VerifiedToken
from ._errors import BatonError

TokenLike = Union[str, Token, VerifiedToken]


def _reserve_params(action, amount, unit, resource, args, ttl, idempotency_key):
    return {
        "action": action,
        "amount": amount,
        "unit": unit,
        "resource": resource,
        "args": args,
        "ttl": ttl,
        "idempotency_key": idempotency_key,
    }


class Hold:
    """An active reservation made by ``Ledger.hold``; finish it with
    ``commit(actual)`` or ``release()``."""

    def __init__(self, ledger, token: TokenLike, reservation: dict, key: str) -> None:
        self._ledger = ledger
        self._token = token
        self._key = key
        self.reservation = reservation
        self.finished = False

    @property
    def id(self) -> str:
        return self.reservation["id"]

    @property
    def amount(self) -> int:
        return self.reservation["amount"]

    def _params(self, step: str, **more) -> dict:
        return {"reservation": self.id, "idempotency_key": f"{self._key}:{step}", **more}


class _SyncHold(Hold):
    def commit(self, actual: Optional[int] = None) -> dict:
        """Charges ``actual`` (default: the amount held) and ends the hold."""
        r = self._ledger._call(
            "commit", self._token, self._params("commit", actual=self.amount if actual is None else actual)
        )
        self.finished = True
        self.reservation = r
        return r

    def release(self) -> dict:
        """Returns the hold; nothing is charged."""
        r = self._ledger._call("release", self._token, self._params("release"))
        self.finished = True
        self.reservation = r
        return r

    def extend(self, ttl: int) -> dict:
        """Keeps the hold ``ttl`` more seconds."""
        r = self._ledger._call("extend", self._token, self._params(f"extend-{secrets.token_hex(4)}", ttl=ttl))
        self.reservation = r
        return r


class _AsyncHold(Hold):
    async def commit(self, actual: Optional[int] = None) -> dict:
        r = await self._ledger._acall(
            "commit", self._token, self._params("commit", actual=self.amount if actual is None else actual)
        )
        self.finished = True
        self.reservation = r
        return r

    async def release(self) -> dict:
        r = await self._ledger._acall("release", self._token, self._params("release"))
        self.finished = True
        self.reservation = r
        return r

    async def extend(self, ttl: int) -> dict:
        r = await self._ledger._acall(
            "extend", self._token, self._params(f"extend-{secrets.token_hex(4)}", ttl=ttl)
        )
        self.reservation = r
        return r


class _HoldContext:
    """``with ledger.hold(...) as h``: reserves on entry; on an exception
    releases the hold and re-raises; on a normal exit without ``h.commit``
    commits the amount held (the work ran, so its estimate is charged)."""

    def __init__(self, ledger, token, params: dict) -> None:
        self._ledger = ledger
        self._token = token
        self._params = params
        key = params.get("idempotency_key") or "h-" + secrets.token_hex(16)
        params["idempotency_key"] = f"{key}:reserve"
        self._key = key
        self._hold: Optional[Hold] = None

    def __enter__(self) -> _SyncHold:
        r = self._ledger._call("reserve", self._token, self._params)
        self._hold = _SyncHold(self._ledger, self._token, r, self._key)
        return self._hold

    def __exit__(self, exc_type, exc, tb) -> bool:
        h = self._hold
        if h is None or h.finished:
            return False
        if exc_type is not None:
            try:
                h.release()
            except BatonError as e:
                # The hold lapses at its ttl anyway; the tool's own error
                # is the one to report.
                exc.__notes__ = [*getattr(exc, "__notes__", []), f"releasing hold {h.id} failed: {e}"]
            return False
        h.commit()
        return False

    async def __aenter__(self) -> _AsyncHold:
        r = await self._ledger._acall("reserve", self._token, self._params)
        self._hold = _AsyncHold(self._ledger, self._token, r, self._key)
        return self._hold

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        h = self._hold
        if h is None or h.finished:
            return False
        if exc_type is not None:
            try:
                await h.release()
            except BatonError as e:
                exc.__notes__ = [*getattr(exc, "__notes__", []), f"releasing hold {h.id} failed: {e}"]
            return False
        await h.commit()
        return False


def _allocate_params(child, unit, amount, fraction, overflow, ttl, idempotency_key):
    return {"child": child, "unit": unit, "amount": amount, "fraction": fraction,
            "overflow": overflow, "ttl": ttl, "idempotency_key": idempotency_key}


class Ledger(LedgerCore):
    """A blocking client of the ledger at ``url`` (``http://127.0.0.1:7878``).

    ``Ledger(url, *, timeout=5.0, connect_timeout=2.0, retries=4)``. Thread
    safe; calls release the GIL while they wait.
    """

    def hold(
        self,
        token: TokenLike,
        action: str,
        amount: int,
        unit: str = "calls",
        *,
        resource: Optional[str] = None,
        args: Optional[Mapping[str, Union[int, str]]] = None,
        ttl: Optional[int] = None,
        idempotency_key: Optional[str] = None,
    ) -> _HoldContext:
        """``with ledger.hold(token, action="tool.run", amount=5) as h: ...; h.commit(3)``.

        Reserves ``amount`` on entry and releases it if the block raises."""
        return _HoldContext(self, token, _reserve_params(action, amount, unit, resource, args, ttl, idempotency_key))

    def reserve(self, token: TokenLike, action: str, amount: int, unit: str = "calls", *,
                resource: Optional[str] = None, args: Optional[Mapping[str, Union[int, str]]] = None,
                ttl: Optional[int] = None, idempotency_key: Optional[str] = None) -> dict:
        """Holds ``amount`` at every budget scope of the token (spec/http.md §6.4)."""
        return self._call("reserve", token, _reserve_params(action, amount, unit, resource, args, ttl, idempotency_key))

    def commit(self, token: TokenLike, reservation: str, actual: int, *, idempotency_key: Optional[str] = None) -> dict:
        """Charges ``actual`` and ends the hold (§6.6)."""
        return self._call("commit", token, {"reservation": reservation, "actual": actual, "idempotency_key": idempotency_key})

    def release(self, token: TokenLike, reservation: str, *, idempotency_key: Optional[str] = None) -> dict:
        """Ends the hold, charging nothing (§6.7)."""
        return self._call("release", token, {"reservation": reservation, "idempotency_key": idempotency_key})

    def extend(self, token: TokenLike, reservation: str, ttl: int, *, idempotency_key: Optional[str] = None) -> dict:
        """Keeps the hold ``ttl`` more seconds (§6.8)."""
        return self._call("extend", token, {"reservation": reservation, "ttl": ttl, "idempotency_key": idempotency_key})

    def reservation(self, token: TokenLike, reservation: str) -> dict:
        """Reads a reservation (§6.5)."""
        return self._call("reservation", token, {"reservation": reservation})

    def spend(self, token: TokenLike, action: str, amount: int, unit: str = "calls", *,
              actual: Optional[int] = None, resource: Optional[str] = None,
              args: Optional[Mapping[str, Union[int, str]]] = None,
              idempotency_key: Optional[str] = None) -> dict:
        """Reserves and commits in one step (§6.9)."""
        p = _reserve_params(action, amount, unit, resource, args, None, idempotency_key)
        p["actual"] = actual
        return self._call("spend", token, p)

    def balances(self, token: TokenLike) -> list:
        """Every budget scope of the token with its counters, nearest first (§6.10)."""
        return self._call("balances", token, {})

    def revoke(self, token: TokenLike, block_id: str, *, target: Optional[TokenLike] = None) -> dict:
        """Revokes ``block_id`` and everything under it (§6.11)."""
        return self._call("revoke", token, {"block_id": block_id, "target": target})

    def revocations(self, admin: TokenLike, after: int = 0) -> dict:
        """One page of the revocation feed after ``after`` (§6.12); ``admin``
        needs ``baton.admin.revocations.read``."""
        return self._call("revocations", admin, {"after": after})

    def authorize(self, token: TokenLike, action: str, *, resource: Optional[str] = None,
                  args: Optional[Mapping[str, Union[int, str]]] = None) -> list:
        """Asks the ledger whether ``token`` allows ``action`` now (§6.3)."""
        return self._call("authorize", token, {"action": action, "resource": resource, "args": args})

    def keys(self) -> list:
        """The issuer's public keys (§6.1)."""
        return self._call("keys", None, {})

    def keyset(self):
        """The issuer's public keys as a ``Keyset`` for a ``Verifier``."""
        from ._baton import Keyset

        return Keyset([k["public_key"] for k in self.keys()])

    def mint(self, admin: TokenLike, body: Mapping[str, Any]) -> dict:
        """Mints a root token (§6.2); ``body`` is the request's JSON body."""
        return self._call("mint", admin, {"body": body})

    def ready(self) -> bool:
        """Whether the ledger's store answers (``GET /readyz``)."""
        return self._call("ready", None, {})

    def allocate(self, token: TokenLike, child: TokenLike, unit: str = "calls", *,
                 amount: Optional[int] = None, fraction: Optional[float] = None,
                 overflow: str = "deny", ttl: Optional[int] = None,
                 idempotency_key: Optional[str] = None) -> dict:
        """Sets aside a guaranteed sub-budget for ``child``, a token descending
        from ``token``: exactly one of ``amount`` and ``fraction`` (of the
        parent's current remaining). ``overflow="shared"`` lets the child go
        on from the parent's pool once it is used up (spec/http.md §6.16)."""
        return self._call("allocate", token, _allocate_params(child, unit, amount, fraction, overflow, ttl, idempotency_key))

    def allocation(self, token: TokenLike, allocation: str) -> dict:
        """Reads an allocation (§6.18)."""
        return self._call("allocation", token, {"allocation": allocation})

    def release_allocation(self, token: TokenLike, allocation: str, *,
                           idempotency_key: Optional[str] = None) -> dict:
        """Ends an allocation; its unused part returns to the pool (§6.19)."""
        return self._call("release_allocation", token, {"allocation": allocation, "idempotency_key": idempotency_key})

    def allocations(self, token: TokenLike) -> list:
        """The active allocations made under ``token`` (§6.17)."""
        return self._call("allocations", token, {})


class AsyncLedger(LedgerCore):
    """The asyncio twin of ``Ledger``: the same methods, as coroutines, and
    ``async with ledger.hold(...) as h``."""

    def hold(self, token: TokenLike, action: str, amount: int, unit: str = "calls", *,
             resource: Optional[str] = None, args: Optional[Mapping[str, Union[int, str]]] = None,
             ttl: Optional[int] = None, idempotency_key: Optional[str] = None) -> _HoldContext:
        return _HoldContext(self, token, _reserve_params(action, amount, unit, resource, args, ttl, idempotency_key))

    async def reserve(self, token: TokenLike, action: str, amount: int, unit: str = "calls", *,
                      resource: Optional[str] = None, args: Optional[Mapping[str, Union[int, str]]] = None,
                      ttl: Optional[int] = None, idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("reserve", token, _reserve_params(action, amount, unit, resource, args, ttl, idempotency_key))

    async def commit(self, token: TokenLike, reservation: str, actual: int, *, idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("commit", token, {"reservation": reservation, "actual": actual, "idempotency_key": idempotency_key})

    async def release(self, token: TokenLike, reservation: str, *, idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("release", token, {"reservation": reservation, "idempotency_key": idempotency_key})

    async def extend(self, token: TokenLike, reservation: str, ttl: int, *, idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("extend", token, {"reservation": reservation, "ttl": ttl, "idempotency_key": idempotency_key})

    async def reservation(self, token: TokenLike, reservation: str) -> dict:
        return await self._acall("reservation", token, {"reservation": reservation})

    async def spend(self, token: TokenLike, action: str, amount: int, unit: str = "calls", *,
                    actual: Optional[int] = None, resource: Optional[str] = None,
                    args: Optional[Mapping[str, Union[int, str]]] = None,
                    idempotency_key: Optional[str] = None) -> dict:
        p = _reserve_params(action, amount, unit, resource, args, None, idempotency_key)
        p["actual"] = actual
        return await self._acall("spend", token, p)

    async def balances(self, token: TokenLike) -> list:
        return await self._acall("balances", token, {})

    async def revoke(self, token: TokenLike, block_id: str, *, target: Optional[TokenLike] = None) -> dict:
        return await self._acall("revoke", token, {"block_id": block_id, "target": target})

    async def revocations(self, admin: TokenLike, after: int = 0) -> dict:
        return await self._acall("revocations", admin, {"after": after})

    async def authorize(self, token: TokenLike, action: str, *, resource: Optional[str] = None,
                        args: Optional[Mapping[str, Union[int, str]]] = None) -> list:
        return await self._acall("authorize", token, {"action": action, "resource": resource, "args": args})

    async def keys(self) -> list:
        return await self._acall("keys", None, {})

    async def mint(self, admin: TokenLike, body: Mapping[str, Any]) -> dict:
        return await self._acall("mint", admin, {"body": body})

    async def allocate(self, token: TokenLike, child: TokenLike, unit: str = "calls", *,
                       amount: Optional[int] = None, fraction: Optional[float] = None,
                       overflow: str = "deny", ttl: Optional[int] = None,
                       idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("allocate", token, _allocate_params(child, unit, amount, fraction, overflow, ttl, idempotency_key))

    async def allocation(self, token: TokenLike, allocation: str) -> dict:
        return await self._acall("allocation", token, {"allocation": allocation})

    async def release_allocation(self, token: TokenLike, allocation: str, *,
                                 idempotency_key: Optional[str] = None) -> dict:
        return await self._acall("release_allocation", token, {"allocation": allocation, "idempotency_key": idempotency_key})

    async def allocations(self, token: TokenLike) -> list:
        return await self._acall("allocations", token, {})

    async def ready(self) -> bool:
        return await self._acall("ready", None, {})
