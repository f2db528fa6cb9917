"""A LangChain tool guarded by Baton: each call is authorized by the agent's
token and charged to the spend ledger; a failed call releases its hold.

Example-only dependency (not installed by CI):

    pip install ./bindings/python langchain-core
    cargo run --release -- serve          # the ledger, in another terminal
    python bindings/python/examples/langchain_tool.py

The guard is framework-neutral: the same decorated function can be handed
to CrewAI, the OpenAI Agents SDK (``function_tool``) or FastMCP (``@mcp.tool``).
"""

from __future__ import annotations

import os
import pathlib

from langchain_core.tools import tool

import baton

LEDGER_URL = os.environ.get("BATON_LEDGER", "http://127.0.0.1:7878")
ADMIN = pathlib.Path(os.environ.get("BATON_ADMIN_TOKEN_FILE", "baton-data/admin.token")).read_text().strip()

ledger = baton.Ledger(LEDGER_URL)
# Public keys only: the gateway can verify but never mint.
verifier = baton.Verifier(ledger.keyset(), cache=10_000)


@tool
@baton.guard(
    "refund.issue",
    verifier=verifier,
    ledger=ledger,
    resource=lambda a: f"customer:{a.customer_id}",
    args=lambda a: {"amount": a.amount},
    cost=lambda a: a.amount,
    unit="usd_microcents",
)
def issue_refund(customer_id: int, amount: int) -> str:
    """Refund `amount` usd_microcents to a customer."""
    return f"refunded {amount} to customer {customer_id}"


if __name__ == "__main__":
    # The orchestrator's token, from the ledger; then a refund agent's,
    # attenuated offline to $5, one customer, refunds of at most $100.
    orchestrator = ledger.mint(ADMIN, {"tools": ["refund.*", "crm.*"],
                                       "budgets": [{"unit": "usd_microcents", "ceiling": baton.usd("50")}]})["token"]
    agent = baton.Token.from_text(orchestrator).attenuate(
        budget={"usd_microcents": baton.usd("5")},
        tools="refund.issue",
        resources="customer:4821",
        args={"refund.issue:amount": {"max": baton.usd("100")}},
        label="refund-agent",
    )
    with baton.use_token(agent):
        print(issue_refund.invoke({"customer_id": 4821, "amount": baton.usd("2")}))
        try:
            issue_refund.invoke({"customer_id": 9999, "amount": 1})
        except baton.Denied as e:
            print("denied:", e.code)  # resource_not_allowed
    print(ledger.balances(agent))
