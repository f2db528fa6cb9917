"""Baton for Python: delegation tokens whose authority shrinks at every hop.

One implementation of the format, verifier and ledger client: the Rust
crate, through PyO3.

* Issuers: ``RootKey.generate()``, ``Token.mint(root, budget=..., tools=...)``.
* Holders, offline: ``Token.from_text(text).attenuate(...)``, ``.seal()``.
* Gateways: ``Verifier(keyset).authorize(text, action, resource, args)``.
* Spending: ``Ledger(url).hold(token, action=..., amount=...)``,
  ``AsyncLedger`` for asyncio, ``@guard(...)`` around a tool function.
"""

from __future__ import annotations

from ._baton import (
    FORMAT_VERSION,
    BudgetScope,
    HolderKey,
    Keyset,
    RevocationFeed,
    RootKey,
    Token,
    VerifiedToken,
    Verifier,
)
from ._errors import (
    AttenuationError,
    BatonError,
    Denied,
    InsufficientBudget,
    InvalidCaveat,
    InvalidKey,
    InvalidToken,
    LedgerError,
    LedgerUnavailable,
    ProofError,
)
from ._guard import Arguments, current_token, guard, use_token
from ._ledger import AsyncLedger, Hold, Ledger

#: usd_microcents in one US dollar.
MICROCENTS_PER_USD = 100_000_000


def usd(dollars: "str | int") -> int:
    """Dollars to usd_microcents, exactly: ``usd("5.00") == 500_000_000``.

    Takes a decimal string (at most 8 decimal places) or an int of whole
    dollars; never a float, which cannot hold cents exactly."""
    if isinstance(dollars, bool) or not isinstance(dollars, (str, int)):
        raise TypeError(f"dollars must be a str like '5.00' or an int, not {type(dollars).__name__}")
    s = str(dollars)
    whole, dot, frac = s.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and not (frac.isdigit() and frac.isascii())):
        raise ValueError(f"{s!r} is not a dollar amount like 50 or 12.34")
    if len(frac) > 8:
        raise ValueError(f"{s!r} has more than 8 decimal places (1 usd_microcent is $0.00000001)")
    amount = int(whole) * MICROCENTS_PER_USD + int(frac.ljust(8, "0") or 0)
    if amount > 2**64 - 1:
        raise ValueError(f"{s!r} dollars do not fit in usd_microcents (u64)")
    return amount


__all__ = [
    "FORMAT_VERSION",
    "MICROCENTS_PER_USD",
    "Arguments",
    "AsyncLedger",
    "AttenuationError",
    "BatonError",
    "BudgetScope",
    "Denied",
    "Hold",
    "HolderKey",
    "InsufficientBudget",
    "InvalidCaveat",
    "InvalidKey",
    "InvalidToken",
    "Keyset",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "ProofError",
    "RevocationFeed",
    "RootKey",
    "Token",
    "VerifiedToken",
    "Verifier",
    "current_token",
    "guard",
    "usd",
    "use_token",
]
