"""``@baton.guard``: authorize, hold, run, charge, around any function.

Framework-neutral: the guarded function is an ordinary Python function (or
coroutine function), so it can be registered as a tool with any agent
framework. The token comes from ``baton.use_token(text)`` (a context
variable, so it follows threads' and tasks' contexts) unless ``token=``
says where else to find it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from typing import Any, Callable, Iterator, Optional, Union

from ._errors import Denied
from ._ledger import AsyncLedger

_current: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("baton_token", default=None)


@contextlib.contextmanager
def use_token(token: Any) -> Iterator[None]:
    """Makes ``token`` (text, ``Token`` or ``VerifiedToken``) the one guarded
    functions called inside the block are authorized with."""
    text = token if isinstance(token, str) else token.to_text()
    reset = _current.set(text)
    try:
        yield
    finally:
        _current.reset(reset)


def current_token() -> Optional[str]:
    """The token set by the innermost ``use_token``, if any."""
    return _current.get()


class Arguments(dict):
    """The guarded call's arguments by parameter name, defaults applied;
    readable as ``a["amount"]`` or ``a.amount``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _value(spec: Any, a: Arguments) -> Any:
    return spec(a) if callable(spec) else spec


def guard(
    action: str,
    *,
    verifier: Any,
    ledger: Any = None,
    resource: Union[None, str, Callable[[Arguments], Optional[str]]] = None,
    args: Union[None, dict, Callable[[Arguments], Optional[dict]]] = None,
    cost: Union[None, int, Callable[[Arguments], int]] = None,
    unit: str = "calls",
    actual: Optional[Callable[[Any, Arguments], int]] = None,
    token: Optional[Callable[[Arguments], Any]] = None,
) -> Callable:
    """Decorates a tool function so that each call

    1. takes the token (``token(a)``, else the one set by ``use_token``),
    2. verifies it and authorizes ``action`` on ``resource(a)`` with
       ``args(a)`` (``InvalidToken``, ``Denied`` or ``ProofError`` if not),
    3. with a ``ledger`` and a ``cost``: reserves ``cost(a)`` ``unit``,
    4. runs the function,
    5. commits ``actual(result, a)`` (default: the cost), or releases the
       hold if the function raised, and re-raises.

    ``a`` is the call's arguments by name (``Arguments``). ``ledger`` is a
    ``Ledger``, or an ``AsyncLedger`` for coroutine functions.
    """
    if cost is not None and ledger is None:
        raise ValueError("guard: a cost needs a ledger to charge it to")

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        def prepare(call_args, call_kwargs):
            bound = sig.bind(*call_args, **call_kwargs)
            bound.apply_defaults()
            a = Arguments(bound.arguments)
            text = token(a) if token is not None else _current.get()
            if text is None:
                raise Denied("no token: call inside baton.use_token(...) or give guard(token=...)", "missing_token")
            if not isinstance(text, str):
                text = text.to_text()
            res = _value(resource, a)
            request_args = _value(args, a)
            verifier.authorize(text, action, res, request_args)
            amount = _value(cost, a) if cost is not None else None
            return a, text, res, request_args, amount

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*call_args, **call_kwargs):
                a, text, res, request_args, amount = prepare(call_args, call_kwargs)
                if amount is None:
                    return await fn(*call_args, **call_kwargs)
                hold = ledger.hold(text, action, amount, unit, resource=res, args=request_args)
                if isinstance(ledger, AsyncLedger):
                    async with hold as h:
                        result = await fn(*call_args, **call_kwargs)
                        await h.commit(actual(result, a) if actual else amount)
                        return result
                with hold as h:
                    result = await fn(*call_args, **call_kwargs)
                    h.commit(actual(result, a) if actual else amount)
                    return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*call_args, **call_kwargs):
            a, text, res, request_args, amount = prepare(call_args, call_kwargs)
            if amount is None:
                return fn(*call_args, **call_kwargs)
            with ledger.hold(text, action, amount, unit, resource=res, args=request_args) as h:
                result = fn(*call_args, **call_kwargs)
                h.commit(actual(result, a) if actual else amount)
                return result

        return wrapper

    return decorate
