"""Every format v1 test vector of spec/vectors, checked from Python with
the same reason codes (spec/vectors/README.md, "Running a vector")."""

from __future__ import annotations

import json

import pytest

import baton
from conftest import VECTORS

FILES = sorted(VECTORS.glob("*.json"))


def test_every_listed_vector_is_checked():
    """The vectors' README lists each file; every one is run here."""
    import re

    listed = set(re.findall(r"\| \[(\d{3}_[a-z0-9_]+\.json)\]", (VECTORS / "README.md").read_text()))
    assert listed, "no vectors listed in spec/vectors/README.md"
    assert listed == {p.name for p in FILES}


def decide(verifier, token, r):
    """What the library decides on one request, in the vectors' shape."""
    try:
        scopes = verifier.authorize(
            token,
            r["action"],
            r.get("resource"),
            r.get("args"),
            at=r["time"],
            proof=r.get("proof"),
            operation=r.get("operation"),
            body=bytes.fromhex(r["body_hex"]) if "body_hex" in r else None,
        )
    except (baton.Denied, baton.ProofError, baton.InvalidToken) as e:
        return {"decision": "deny", "code": e.code}
    return {"decision": "allow", "budgets": [s.to_dict() for s in scopes]}


def verifier_for(v):
    return baton.Verifier(
        v["root_public_keys"], skew=v["clock_skew_seconds"], audience=v.get("audience")
    )


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_vector(path):
    v = json.loads(path.read_text())
    verifier = verifier_for(v)
    expected = v["expected"]
    try:
        token = verifier.verify(v["token"])
        got = None
    except baton.InvalidToken as e:
        token, got = None, e.code
    if "token_hex" in v:
        # The binary form is judged the same way.
        try:
            verifier.verify(bytes.fromhex(v["token_hex"]))
            from_bytes = None
        except baton.InvalidToken as e:
            from_bytes = e.code
        assert from_bytes == got
    if expected["result"] == "invalid":
        assert got == expected["code"]
        if got in ("unknown_kid", "bad_signature", "bad_proof"):
            # A rejection that needs a key comes after a successful parse.
            baton.Token.from_text(v["token"])
        return
    assert got is None, f"expected valid, got {got}"
    assert token.inspect()["authority"] == v["authority"]
    assert baton.Token.from_text(v["token"]).inspect()["authority"] == v["authority"]
    assert v["requests"]
    for r in v["requests"]:
        assert decide(verifier, token, r) == r["expected"], r.get("note")
    # The gateway path (text in, one call) decides the same, on a fresh
    # verifier (with its own replay store).
    fresh = verifier_for(v)
    for r in v["requests"]:
        assert decide(fresh, v["token"], r) == r["expected"], r.get("note")
