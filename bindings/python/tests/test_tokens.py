"""Tokens offline: minting, attenuating, sealing, inspecting, keys, holder
binding, and bad input raising the documented exceptions."""

from __future__ import annotations

import datetime
import os
import stat

import pytest

import baton

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def root():
    return baton.RootKey.generate()


@pytest.fixture
def orchestrator(root):
    return baton.Token.mint(
        root,
        budget={"usd_microcents": baton.usd("50")},
        tools="crm.*,refund.*,email.*",
        depth=3,
        expires=NOW + 3600,
        label="orchestrator",
    )


def test_the_support_scenario(root, orchestrator):
    refund = orchestrator.attenuate(
        budget={"usd_microcents": baton.usd("5")},
        tools=["crm.read", "refund.issue"],
        args={"refund.issue:amount": {"max": 10_000_000_000}},
        resources="customer:4821",
        depth=1,
        label="refund-agent",
    )
    verifier = baton.Verifier(baton.Keyset([root.public_key]), skew=30)
    token = verifier.verify(refund.to_text())
    assert len(token) == 2 and token.root_kid == root.kid
    scopes = verifier.authorize(token, "refund.issue", "customer:4821", {"amount": 4_000_000_000}, at=NOW + 60)
    assert [(s.block, s.ceiling, s.unit) for s in scopes] == [(1, 500_000_000, "usd_microcents"), (0, 5_000_000_000, "usd_microcents")]
    assert scopes[0].block_id == token.block_ids[1]
    for action, resource, args, code in [
        ("email.send", "customer:4821", None, "action_not_allowed"),
        ("refund.issue", "customer:4821", {"amount": 15_000_000_000}, "arg_out_of_bounds"),
        ("refund.issue", "customer:4821", None, "arg_missing"),
        ("crm.read", "customer:9999", None, "resource_not_allowed"),
        ("CRM.Read", "customer:4821", None, "invalid_action"),
    ]:
        with pytest.raises(baton.Denied) as e:
            verifier.authorize(token, action, resource, args, at=NOW + 60)
        assert e.value.code == code
    with pytest.raises(baton.Denied) as e:
        verifier.authorize(token, "crm.read", "customer:4821", at=NOW + 3600 + 31)
    assert e.value.code == "expired"
    # Widening is refused when attenuating, naming the caveat.
    with pytest.raises(baton.AttenuationError) as e:
        refund.attenuate(tools="crm.*")
    assert e.value.code == "widening_tools"
    lookup = refund.attenuate(budget=[("usd_microcents", baton.usd("2"))], tools="crm.read", depth=0)
    with pytest.raises(baton.AttenuationError) as e:
        lookup.attenuate(depth=0)
    assert e.value.code == "depth_exceeded"


def test_inspect_has_the_cli_shape(orchestrator):
    doc = orchestrator.inspect()
    assert doc["signatures_verified"] is False
    assert doc["format_version"] == baton.FORMAT_VERSION == 1
    assert doc["text_length"] == len(orchestrator.to_text())
    assert doc["size_bytes"] == len(orchestrator.to_bytes())
    assert doc["sealed"] is False
    block = doc["blocks"][0]
    assert block["index"] == 0 and block["kid"] == doc["root_kid"]
    expiry = next(c for c in block["caveats"] if c["type"] == "expiry")
    assert expiry["not_after"] == {"unix": NOW + 3600, "rfc3339": "2027-01-15T09:00:00Z"}
    assert doc["authority"]["tools"] == ["crm.*", "email.*", "refund.*"]
    assert doc["authority"]["effective_budgets"] == [{"unit": "usd_microcents", "tools": None, "ceiling": 5_000_000_000}]


def test_sealed_tokens_take_no_block(root, orchestrator):
    sealed = orchestrator.seal()
    assert sealed.sealed and sealed.inspect()["sealed"]
    with pytest.raises(baton.AttenuationError) as e:
        sealed.attenuate(depth=0)
    assert e.value.code == "sealed"
    assert baton.Verifier(root).verify(sealed.to_text()).sealed


def test_text_round_trip_and_parse_errors(orchestrator):
    text = orchestrator.to_text()
    assert baton.Token.from_text(text).to_text() == text
    assert baton.Token.from_text(orchestrator.to_bytes()).to_text() == text
    for bad, code in [("nope", "bad_prefix"), (text + "\n", "base64_whitespace"), (text + "=", "base64_padding")]:
        with pytest.raises(baton.InvalidToken) as e:
            baton.Token.from_text(bad)
        assert e.value.code == code
    with pytest.raises(baton.InvalidToken) as e:
        baton.Token.from_text("baton_v1_" + "A" * 20000)
    assert e.value.code == "too_large"


def test_other_keys_do_not_verify(orchestrator):
    other = baton.Verifier(baton.RootKey.generate())
    with pytest.raises(baton.InvalidToken) as e:
        other.verify(orchestrator.to_text())
    assert e.value.code == "unknown_kid"
    with pytest.raises(baton.InvalidToken) as e:
        other.authorize(orchestrator.to_text(), "crm.read")
    assert e.value.code == "unknown_kid"


def test_an_unverified_token_is_never_authorized(root, orchestrator):
    with pytest.raises(TypeError):
        baton.Verifier(root).authorize(orchestrator, "crm.read")


def test_revocation(root, orchestrator):
    v = baton.Verifier(root, cache=10)
    t = v.verify(orchestrator.to_text())
    v.authorize(t, "crm.read", at=NOW)
    v.revoke(t.block_id)
    with pytest.raises(baton.InvalidToken) as e:
        v.authorize(t, "crm.read", at=NOW)
    assert e.value.code == "revoked"
    with pytest.raises(ValueError):
        v.revoke("not-hex")


def test_ttl_never_passes_the_parent(orchestrator):
    child = orchestrator.attenuate(ttl=datetime.timedelta(days=3650))
    assert child.inspect()["authority"]["not_after"] == NOW + 3600


def test_times_may_be_aware_datetimes(root):
    at = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    t = baton.Token.mint(root, tools="a.b", expires=at)
    assert t.inspect()["authority"]["not_after"] == 1_893_456_000
    with pytest.raises(ValueError):
        baton.Token.mint(root, tools="a.b", expires=datetime.datetime(2030, 1, 1))


# ---- bad input: the documented exception, never a crash ----


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"budget": {"calls": 2**64}}, ValueError),
        ({"budget": {"calls": 10**100}}, ValueError),
        ({"budget": {"calls": -1}}, ValueError),
        ({"budget": {"calls": "5"}}, TypeError),
        ({"budget": {"calls": 5.0}}, TypeError),
        ({"budget": {"calls": True}}, TypeError),
        ({"budget": [("calls",)]}, TypeError),
        ({"budget": 5}, TypeError),
        ({"depth": 2**32}, ValueError),
        ({"depth": -1}, ValueError),
        ({"depth": "3"}, TypeError),
        ({"expires": 2**64}, ValueError),
        ({"ttl": 1.5}, TypeError),
        ({"args": {"a.b:n": {"max": 2**63}}}, ValueError),
        ({"args": {"a.b:n": {"max": "1"}}}, TypeError),
        ({"args": {"a.b:n": "x|y"}}, TypeError),
        ({"tools": 5}, TypeError),
        ({"tools": ["a.b", 5]}, TypeError),
        ({"ttl": 60, "expires": NOW}, ValueError),
    ],
)
def test_bad_amounts_and_types(root, kwargs, exc):
    kwargs.setdefault("tools", "a.*")
    with pytest.raises(exc) as e:
        baton.Token.mint(root, **kwargs)
    assert str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tools": "CRM.*"},
        {"tools": "crm.*.read"},
        {"tools": ""},
        {"tools": []},
        {"resources": "customer 4821"},
        {"budget": {"usd": 5}},
        {"budget": {"Calls": 5}},
        {"budget": [("calls", 1, "BAD")]},
        {"args": {"refund.issue": {"max": 1}}},
        {"args": {"refund.issue:Amount": {"max": 1}}},
        {"label": "bell\x07"},
        {"args": {"a.b:n": {"min": 5, "max": 1}}},
    ],
)
def test_invalid_caveats(root, kwargs):
    kwargs.setdefault("tools", "a.*")
    with pytest.raises(baton.InvalidCaveat) as e:
        baton.Token.mint(root, **kwargs)
    assert e.value.code in ("invalid_caveat",)
    assert isinstance(e.value, ValueError)


def test_bad_request_arguments(root, orchestrator):
    v = baton.Verifier(root)
    t = v.verify(orchestrator.to_text())
    with pytest.raises(ValueError):
        v.authorize(t, "crm.read", args={"n": 2**63}, at=NOW)
    with pytest.raises(TypeError):
        v.authorize(t, "crm.read", args={"n": 1.5}, at=NOW)
    with pytest.raises(TypeError):
        v.authorize(t, "crm.read", args=[1], at=NOW)
    with pytest.raises(ValueError):
        v.authorize(t, "crm.read", at=-1)
    with pytest.raises(TypeError):
        v.verify(12)
    with pytest.raises(TypeError):
        baton.Verifier(12)
    with pytest.raises(baton.InvalidKey) as e:
        baton.Verifier(["baton_pk1_nope"])
    assert e.value.code == "key_encoding"


def test_usd_is_exact():
    assert baton.usd("50") == baton.usd(50) == 5_000_000_000
    assert baton.usd("0.00000001") == 1
    assert baton.usd("184467440737.09551615") == 2**64 - 1
    for bad in ["", ".5", "5.", "-1", "1e3", "0.000000001", "184467440737.09551616"]:
        with pytest.raises(ValueError):
            baton.usd(bad)
    with pytest.raises(TypeError):
        baton.usd(5.0)


def test_key_files(tmp_path, root):
    path = tmp_path / "issuer.key"
    root.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert baton.RootKey.load(path).public_key == root.public_key
    with pytest.raises(OSError):
        root.save(path)  # never overwritten
    (tmp_path / "bad.key").write_text("baton_sk1_short\n")
    with pytest.raises(baton.InvalidKey), pytest.warns(UserWarning, match="chmod 600"):
        baton.RootKey.load(tmp_path / "bad.key")
    assert "baton_sk1_" not in repr(root)
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# kid {root.kid}\n{root.public_key}\n\n")
    assert baton.Keyset.load(keys).kids == [root.kid]


def test_holder_binding_and_proof(root):
    holder = baton.HolderKey.generate()
    bound = baton.Token.mint(root, tools="refund.*", budget={"calls": 5}, holder=holder.public_key)
    assert bound.holder == holder.public_key
    with pytest.raises(baton.AttenuationError):
        bound.attenuate(tools="refund.issue", holder=holder)  # needs the holder's key
    narrowed = bound.attenuate(tools="refund.issue", holder=holder, as_holder=holder)
    v = baton.Verifier(root, audience="gateway.example")
    t = v.verify(narrowed.to_text())
    with pytest.raises(baton.ProofError) as e:
        v.authorize(t, "refund.issue", at=NOW)
    assert e.value.code == "proof_missing"
    proof = narrowed.prove(holder, "gateway.example", "refund.issue", at=NOW)
    assert v.authorize(t, "refund.issue", at=NOW, proof=proof)[0].ceiling == 5
    with pytest.raises(baton.ProofError) as e:
        v.authorize(t, "refund.issue", at=NOW, proof=proof)
    assert e.value.code == "proof_replayed"
    other = narrowed.prove(holder, "other.example", "refund.issue", at=NOW)
    with pytest.raises(baton.ProofError) as e:
        v.authorize(narrowed.to_text(), "refund.issue", at=NOW, proof=other)
    assert e.value.code == "proof_invalid"
