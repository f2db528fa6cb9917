"""The installed package: typing files shipped, an abi3 extension, and
verification from many threads at once (the GIL is released)."""

from __future__ import annotations

import concurrent.futures
import importlib.resources
import pathlib

import baton


def test_typing_files_are_shipped():
    files = importlib.resources.files("baton")
    assert (files / "py.typed").is_file()
    assert (files / "_baton.pyi").is_file()


def test_the_extension_is_abi3():
    ext = pathlib.Path(baton._baton.__file__).name
    assert ext.startswith("_baton.abi3."), ext


def test_every_exception_has_a_code_and_the_hierarchy():
    for name in baton._errors.__all__:
        cls = getattr(baton, name)
        assert issubclass(cls, baton.BatonError)
        assert cls("m", "some_code").code == "some_code"
    assert issubclass(baton.InvalidCaveat, ValueError)
    assert issubclass(baton.InsufficientBudget, baton.LedgerError)


def test_threads_verify_at_once():
    root = baton.RootKey.generate()
    tokens = [baton.Token.mint(root, tools="t.*", label=f"n{i}").attenuate(tools="t.run").to_text() for i in range(64)]
    verifier = baton.Verifier(root, cache=16)

    def check(text):
        return verifier.authorize(text, "t.run") == []

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, tokens * 4))
