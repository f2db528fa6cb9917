"""Shared fixtures: the repository's paths, the `baton` CLI binary and a
real `baton serve` on 127.0.0.1 with a temporary data directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
import threading

import pytest

import baton

REPO = pathlib.Path(__file__).resolve().parents[3]
VECTORS = REPO / "spec" / "vectors"


def baton_bin() -> pathlib.Path:
    """The CLI: $BATON_BIN, else target/debug/baton of the repository
    (`cargo build` at the root), else target/release/baton."""
    env = os.environ.get("BATON_BIN")
    if env:
        return pathlib.Path(env)
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "baton"
        if p.exists():
            return p
    pytest.fail("no baton binary: run `cargo build` at the repository root or set BATON_BIN")


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    return baton_bin()


def run_cli(cli, args, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BATON_TOKEN", "BATON_LEDGER")}
    p = subprocess.run([str(cli), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"baton {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


class Server:
    def __init__(self, url: str, admin: str, proc: subprocess.Popen, data: pathlib.Path) -> None:
        self.url = url
        self.admin = admin
        self.proc = proc
        self.data = data

    def mint(self, ledger: baton.Ledger, **body) -> str:
        """A fresh root token from the ledger (tools default `tool.*`)."""
        body.setdefault("tools", ["tool.*"])
        return ledger.mint(self.admin, body)["token"]


@pytest.fixture(scope="session")
def server(cli, tmp_path_factory) -> Server:
    """`baton serve` on an ephemeral loopback port, as tests/common/mod.rs
    starts it: the first stdout line names the address."""
    data = tmp_path_factory.mktemp("baton-data")
    log = open(data.parent / "serve.log", "wb")
    proc = subprocess.Popen(
        [str(cli), "serve", "--listen", "127.0.0.1:0", "--data", str(data)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "NO_COLOR": "1"},
    )
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if not line or not line[0].startswith(b"listening on "):
        proc.kill()
        pytest.fail(f"baton serve did not start: {line!r}; log in {log.name}")
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    url = line[0].decode().strip().removeprefix("listening on ")
    admin = (data / "admin.token").read_text().strip()
    yield Server(url, admin, proc, data)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def ledger(server) -> baton.Ledger:
    return baton.Ledger(server.url)
