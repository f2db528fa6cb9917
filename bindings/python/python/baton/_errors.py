"""The exceptions of the baton package.

Every exception carries ``code``, the stable reason code of the spec
(spec/token.md §9 for tokens, spec/http.md §7 for the ledger), so callers
branch on ``e.code`` and never on the message.

::

    BatonError
    ├── InvalidToken        the token does not verify (or is revoked)
    ├── Denied              the token does not allow this request
    ├── ProofError          a holder-bound token's proof was refused
    ├── AttenuationError    a block would widen, the token is sealed, ...
    ├── InvalidCaveat       (also ValueError) a caveat argument the format cannot hold
    ├── InvalidKey          (also ValueError) a key text or file that is not a key
    └── LedgerError         the ledger refused, or could not be reached
        ├── InsufficientBudget
        └── LedgerUnavailable   unreachable, 503 or 408: safe to retry with the same key

Amounts and other integers that do not fit (too large, negative) raise the
built-in ``ValueError``; a value of the wrong type raises ``TypeError``.
"""

from __future__ import annotations

from typing import Any, Optional


class BatonError(Exception):
    """Base of every baton exception; ``code`` is the stable reason code."""

    code: str

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self):  # pickling keeps the code
        return (type(self), (self.message, self.code), self.__dict__)


class InvalidToken(BatonError):
    """The token is malformed, widens, is signed wrongly, or is revoked."""


class Denied(BatonError):
    """The token is valid but does not allow the request."""


class ProofError(BatonError):
    """A holder-bound token's proof of possession was refused."""


class AttenuationError(BatonError):
    """A child block could not be appended (sealed, widening, depth)."""


class InvalidCaveat(BatonError, ValueError):
    """A caveat argument the token format cannot hold (a bad pattern, unit, ...)."""


class InvalidKey(BatonError, ValueError):
    """A key text or key file that does not hold a valid key."""


class LedgerError(BatonError):
    """The ledger refused (``status`` is the HTTP status) or could not be reached."""

    status: Optional[int] = None
    remaining: Optional[int] = None
    scope: Optional[dict[str, Any]] = None
    state: Optional[str] = None
    block_id: Optional[str] = None
    #: ``allocation_exhausted`` (``remaining`` is its unused part) and
    #: ``allocation_exists``: the allocation's id.
    allocation_id: Optional[str] = None


class InsufficientBudget(LedgerError):
    """A budget scope lacks room; ``scope`` and ``remaining`` say which and how much."""


class LedgerUnavailable(LedgerError):
    """No answer, or 503/408 after every retry: retry later with the same idempotency key."""


__all__ = [
    "BatonError",
    "InvalidToken",
    "Denied",
    "ProofError",
    "AttenuationError",
    "InvalidCaveat",
    "InvalidKey",
    "LedgerError",
    "InsufficientBudget",
    "LedgerUnavailable",
]
