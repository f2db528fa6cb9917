"""The Python package and the `baton` CLI read each other's tokens and keys."""

from __future__ import annotations

import json

import baton
from conftest import run_cli


def test_a_python_token_verifies_with_the_cli(cli, tmp_path):
    root = baton.RootKey.generate()
    (tmp_path / "issuer.pub").write_text(f"# kid {root.kid}\n{root.public_key}\n")
    token = baton.Token.mint(root, budget={"calls": 10}, tools="crm.*", ttl=3600).attenuate(
        tools="crm.read", args={"crm.read:limit": {"max": 50}}, resources="customer:*", label="py"
    )
    text = token.to_text()
    ok = run_cli(cli, ["verify", "--keyset", str(tmp_path / "issuer.pub"), "--action", "crm.read",
                       "--resource", "customer:1", "--arg", "limit=10", "--json"], text + "\n")
    assert json.loads(ok.stdout)["decision"] == "allow"
    no = run_cli(cli, ["verify", "--keyset", str(tmp_path / "issuer.pub"), "--action", "crm.write", "--json"],
                 text + "\n", check=False)
    assert no.returncode != 0 and "action_not_allowed" in no.stdout + no.stderr
    # inspect --json and Token.inspect() are one document.
    doc = json.loads(run_cli(cli, ["inspect", "--json"], text + "\n").stdout)
    assert doc == token.inspect()


def test_a_cli_token_verifies_in_python(cli, tmp_path):
    key = tmp_path / "issuer.key"
    pub = run_cli(cli, ["keygen", "--out", str(key)]).stdout
    (tmp_path / "issuer.pub").write_text(pub)
    text = run_cli(cli, ["mint", "--key", str(key), "--budget", "usd=5", "--tools", "refund.*",
                         "--depth", "2", "--ttl", "1h"]).stdout.strip()
    child = run_cli(cli, ["attenuate", "--tools", "refund.issue", "--arg", "refund.issue:amount<=100"],
                    text + "\n").stdout.strip()
    for keyset in (baton.Keyset.load(tmp_path / "issuer.pub"), baton.RootKey.load(key)):
        v = baton.Verifier(keyset)
        t = v.verify(child)
        assert [s.ceiling for s in v.authorize(t, "refund.issue", args={"amount": 100})] == [500_000_000]
    # A Python child of the CLI's token, read back by the CLI.
    grandchild = baton.Token.from_text(child).attenuate(depth=0, label="py-child")
    doc = json.loads(run_cli(cli, ["inspect", "--json"], grandchild.to_text() + "\n").stdout)
    assert doc["authority"]["labels"] == [{"block": 2, "label": "py-child"}]
    ok = run_cli(cli, ["verify", "--keyset", str(tmp_path / "issuer.pub"), "--action", "refund.issue",
                       "--arg", "amount=7"], grandchild.to_text() + "\n")
    assert ok.returncode == 0
