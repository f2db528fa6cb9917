"""Type stubs of the native module (src/*.rs)."""

from __future__ import annotations

import datetime
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

FORMAT_VERSION: int

_Time = Union[int, datetime.datetime]
_Seconds = Union[int, datetime.timedelta]
_Budget = Union[
    Mapping[str, Union[int, tuple[int, Optional[str]]]],
    Iterable[Union[tuple[str, int], tuple[str, int, Optional[str]]]],
]
_Patterns = Union[str, Iterable[str]]
_Bound = Union[Mapping[str, Optional[int]], Iterable[str]]
_Args = Mapping[str, Union[int, str]]
_KeyLike = Union["Keyset", "RootKey", str, Iterable[Union["RootKey", str]]]
_TokenLike = Union[str, "Token", "VerifiedToken"]

class RootKey:
    @staticmethod
    def generate() -> RootKey: ...
    @staticmethod
    def from_text(text: str) -> RootKey: ...
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> RootKey: ...
    def save(self, path: Union[str, os.PathLike[str]]) -> None: ...
    def to_text(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def kid(self) -> str: ...

class HolderKey:
    @staticmethod
    def generate() -> HolderKey: ...
    @staticmethod
    def from_text(text: str) -> HolderKey: ...
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> HolderKey: ...
    def save(self, path: Union[str, os.PathLike[str]]) -> None: ...
    def to_text(self) -> str: ...
    @property
    def public_key(self) -> str: ...

class Keyset:
    def __init__(self, keys: Optional[_KeyLike] = None) -> None: ...
    @staticmethod
    def from_text(text: str) -> Keyset: ...
    @staticmethod
    def load(path: Union[str, os.PathLike[str]]) -> Keyset: ...
    def add(self, key: _KeyLike) -> None: ...
    @property
    def kids(self) -> list[str]: ...
    @property
    def public_keys(self) -> list[str]: ...
    def __len__(self) -> int: ...

class _TokenBase:
    def to_text(self) -> str: ...
    def to_bytes(self) -> bytes: ...
    def inspect(self) -> dict[str, Any]: ...
    @property
    def block_ids(self) -> list[str]: ...
    @property
    def block_id(self) -> str: ...
    @property
    def root_kid(self) -> str: ...
    @property
    def sealed(self) -> bool: ...
    @property
    def holder(self) -> Optional[str]: ...
    def __len__(self) -> int: ...
    def attenuate(
        self,
        *,
        budget: Optional[_Budget] = None,
        tools: Optional[_Patterns] = None,
        depth: Optional[int] = None,
        ttl: Optional[_Seconds] = None,
        expires: Optional[_Time] = None,
        not_before: Optional[_Time] = None,
        resources: Optional[_Patterns] = None,
        args: Optional[Mapping[str, _Bound]] = None,
        label: Optional[str] = None,
        holder: Optional[Union[str, HolderKey]] = None,
        as_holder: Optional[HolderKey] = None,
    ) -> Token: ...
    def seal(self, *, as_holder: Optional[HolderKey] = None) -> Token: ...
    def prove(
        self,
        holder: HolderKey,
        audience: str,
        action: str,
        *,
        resource: Optional[str] = None,
        args: Optional[_Args] = None,
        operation: Optional[str] = None,
        body: Optional[bytes] = None,
        at: Optional[_Time] = None,
    ) -> str: ...

class Token(_TokenBase):
    @staticmethod
    def mint(
        root: RootKey,
        *,
        budget: Optional[_Budget] = None,
        tools: Optional[_Patterns] = None,
        depth: Optional[int] = None,
        ttl: Optional[_Seconds] = None,
        expires: Optional[_Time] = None,
        not_before: Optional[_Time] = None,
        resources: Optional[_Patterns] = None,
        args: Optional[Mapping[str, _Bound]] = None,
        label: Optional[str] = None,
        holder: Optional[Union[str, HolderKey]] = None,
    ) -> Token: ...
    @staticmethod
    def from_text(text: Union[str, bytes]) -> Token: ...

class VerifiedToken(_TokenBase): ...

class BudgetScope:
    @property
    def block(self) -> int: ...
    @property
    def block_id(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def ceiling(self) -> int: ...
    @property
    def tools(self) -> Optional[str]: ...
    def to_dict(self) -> dict[str, Any]: ...

class RevocationFeed:
    @property
    def fresh(self) -> bool: ...
    @property
    def next(self) -> Optional[int]: ...
    @property
    def last_error(self) -> Optional[str]: ...
    def stop(self) -> None: ...

class Verifier:
    def __init__(
        self,
        keyset: _KeyLike,
        *,
        cache: Optional[int] = None,
        skew: Optional[_Seconds] = None,
        audience: Optional[str] = None,
        require_holder: bool = False,
        proof_window: Optional[tuple[_Seconds, _Seconds]] = None,
    ) -> None: ...
    def verify(self, token: Union[str, bytes]) -> VerifiedToken: ...
    def authorize(
        self,
        token: Union[VerifiedToken, str],
        action: str,
        resource: Optional[str] = None,
        args: Optional[_Args] = None,
        at: Optional[_Time] = None,
        proof: Optional[str] = None,
        *,
        operation: Optional[str] = None,
        body: Optional[bytes] = None,
    ) -> list[BudgetScope]: ...
    def revoke(self, block_id: str) -> None: ...
    def follow_revocations(
        self, ledger: LedgerCore, admin: _TokenLike, *, interval: float = 1.0, max_staleness: float = 30.0
    ) -> RevocationFeed: ...

class LedgerCore:
    def __init__(
        self, url: str, *, timeout: float = 5.0, connect_timeout: float = 2.0, retries: int = 4
    ) -> None: ...
    @property
    def url(self) -> str: ...
    def _call(self, op: str, token: Optional[_TokenLike], params: dict[str, Any]) -> Any: ...
    def _acall(self, op: str, token: Optional[_TokenLike], params: dict[str, Any]) -> Any: ...
