"""A lost answer is retried with the same idempotency key: the ledger
applies the reserve once, though the client sent it twice."""

from __future__ import annotations

import socket
import threading
import urllib.parse

import baton


class LoseFirstAnswer:
    """A TCP proxy to the ledger that forwards the first request but closes
    the connection instead of relaying its answer; later connections pass."""

    def __init__(self, upstream: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.lost = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            lose = self.connections == 1
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self.pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, lose), daemon=True).start()

    def pipe(self, src: socket.socket, dst: socket.socket, lose: bool) -> None:
        try:
            while data := src.recv(65536):
                if lose:
                    # The ledger has answered, so it applied the request;
                    # the client never hears of it.
                    self.lost.set()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            # shutdown, not just close: it sends the FIN at once and wakes
            # the other direction's thread blocked in recv.
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_lost_answer_is_retried_with_the_same_key(server, ledger):
    token = server.mint(ledger, budgets=[{"unit": "calls", "ceiling": 10}])
    proxy = LoseFirstAnswer(server.url)
    try:
        flaky = baton.Ledger(proxy.url, retries=3)
        r = flaky.reserve(token, "tool.run", 4)
        assert proxy.lost.is_set() and proxy.connections >= 2
    finally:
        proxy.close()
    # Applied once: one hold of 4, the one the client got back.
    b = ledger.balances(token)[0]
    assert (b["held"], b["spent"]) == (4, 0)
    assert ledger.reservation(token, r["id"])["amount"] == 4
