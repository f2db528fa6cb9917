"""The gateway path from Python, side by side in one run.

For a 4-block token: text → verified → authorized, one call per request.

* Baton, bearer token: cold (no cache: every signature checked) and
  cached (the verified chain remembered); and Baton's Python overhead over
  the same operation timed in Rust (bench/gateway_rust.rs, built with the
  same release profile).
* Baton, holder-bound token with a per-request proof of possession: the
  closest equivalent of tenuo, whose warrants always need one.
* biscuit-python: a 4-block biscuit (authority + 3 attenuation blocks of
  checks), parsed and verified from base64, then authorized with the
  request's facts. It has no verified-token cache.
* tenuo: a 4-warrant delegation stack, decoded from base64 and checked by
  ``Authorizer.check_chain`` with a proof-of-possession signature.

Each figure is the median per-call time over batches of calls.

    pip install ./bindings/python biscuit-python tenuo
    python bindings/python/bench/gateway.py [--json out.json]

Run from the repository root (it runs `cargo run --release --example
gateway_rust` in bindings/python for the Rust figure).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import baton

AT = 1_800_000_600
ROUNDS = 5
HERE = pathlib.Path(__file__).resolve().parent
CRATE = HERE.parent


def per_call_us(fn, batches: int = 31, calls: int = 200, warmup: int = 2) -> float:
    """The median over `batches` of the mean per-call time of `calls` calls, in µs."""
    samples = []
    for i in range(warmup + batches):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        dt = (time.perf_counter_ns() - t0) / calls / 1000
        if i >= warmup:
            samples.append(dt)
    return statistics.median(samples)


def baton_tokens(root: baton.RootKey, holder: baton.HolderKey | None = None):
    """Root + 3 attenuations: budgets, tools, resources, an argument bound."""
    t = baton.Token.mint(root, budget={"usd_microcents": baton.usd("50")}, tools="crm.*,refund.*",
                         depth=3, expires=AT + 3600, label="orchestrator",
                         holder=holder.public_key if holder else None)
    sign = {"as_holder": holder, "holder": holder} if holder else {}
    t = t.attenuate(budget={"usd_microcents": baton.usd("5")}, tools=["crm.read", "refund.issue"],
                    resources="customer:*", args={"refund.issue:amount": {"max": 10_000}}, **sign)
    t = t.attenuate(budget={"usd_microcents": baton.usd("2")}, args={"refund.issue:amount": {"max": 5_000}}, **sign)
    t = t.attenuate(budget={"usd_microcents": baton.usd("1")}, resources="customer:4821",
                    args={"refund.issue:amount": {"max": 1_000}}, depth=0, label="ticket", **sign)
    assert len(t) == 4
    return t


def rust_figures(public_key: str, text: str) -> dict:
    p = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "gateway_rust"],
        cwd=CRATE, input=f"{public_key}\n{text}\n", capture_output=True, text=True, check=True,
    )
    out = json.loads(p.stdout)
    return {"cold_us": out["cold_ns"] / 1000, "cached_us": out["cached_ns"] / 1000}


def bench_baton(results: dict) -> None:
    root = baton.RootKey.generate()
    token = baton_tokens(root)
    text = token.to_text()
    args = {"amount": 500}
    cold = baton.Verifier(root)
    cached = baton.Verifier(root, cache=1024)
    for v in (cold, cached):
        assert v.authorize(text, "refund.issue", "customer:4821", args, at=AT)[0].ceiling == 100_000_000
    # Python and Rust take turns, ROUNDS times, so that both see the same
    # machine load; each figure is the median of its rounds.
    with_rust = os.environ.get("BATON_BENCH_NO_RUST") != "1"
    rounds: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        rounds.setdefault("baton_cold_us", []).append(
            per_call_us(lambda: cold.authorize(text, "refund.issue", "customer:4821", args, at=AT)))
        rounds.setdefault("baton_cached_us", []).append(
            per_call_us(lambda: cached.authorize(text, "refund.issue", "customer:4821", args, at=AT)))
        if with_rust:
            rust = rust_figures(root.public_key, text)
            rounds.setdefault("rust_cold_us", []).append(rust["cold_us"])
            rounds.setdefault("rust_cached_us", []).append(rust["cached_us"])
    for key, values in rounds.items():
        results[key] = statistics.median(values)
    if with_rust:
        results["python_overhead_cold_us"] = results["baton_cold_us"] - results["rust_cold_us"]
        results["python_overhead_cached_us"] = results["baton_cached_us"] - results["rust_cached_us"]
    results["baton_cached_two_calls_us"] = per_call_us(
        lambda: cached.authorize(cached.verify(text), "refund.issue", "customer:4821", args, at=AT))
    results["baton_text_bytes"] = len(text)

    # Holder-bound, with a fresh proof per request (the replay store accepts
    # each proof once, so they are made before timing).
    holder = baton.HolderKey.generate()
    bound = baton_tokens(root, holder)
    btext = bound.to_text()
    batches, calls, warmup = 15, 100, 2
    proofs = iter([bound.prove(holder, "gateway.example", "refund.issue", resource="customer:4821",
                               args=args, at=AT) for _ in range((batches + warmup) * calls)])
    pv = baton.Verifier(root, audience="gateway.example")
    results["baton_bound_cold_us"] = per_call_us(
        lambda: pv.authorize(btext, "refund.issue", "customer:4821", args, at=AT, proof=next(proofs)),
        batches=batches, calls=calls, warmup=warmup)
    results["baton_bound_text_bytes"] = len(btext)


def bench_biscuit(results: dict) -> None:
    try:
        from biscuit_auth import AuthorizerBuilder, BiscuitBuilder, BlockBuilder, Biscuit, KeyPair
    except ImportError as e:
        results["biscuit_error"] = f"biscuit-python is not installed: {e}"
        return
    root = KeyPair()
    b = BiscuitBuilder('right("refund.issue"); right("crm.read"); '
                       "check if time($t), $t < 2100-01-01T00:00:00Z;").build(root.private_key)
    b = b.append(BlockBuilder('check if operation($op), ["refund.issue", "crm.read"].contains($op); '
                              'check if resource($r), $r.starts_with("customer:"); '
                              "check if amount($a), $a <= 10000;"))
    b = b.append(BlockBuilder("check if amount($a), $a <= 5000;"))
    b = b.append(BlockBuilder('check if resource("customer:4821"); check if amount($a), $a <= 1000;'))
    text = b.to_base64()
    public = root.public_key
    request = ("operation({op}); resource({res}); amount({amount}); time({now}); "
               "allow if operation($op), right($op);")
    import datetime

    now = datetime.datetime.fromtimestamp(AT, tz=datetime.timezone.utc)
    # The default run-time limit (1 ms of Datalog) trips on a loaded
    # machine; a gateway would raise it too.
    limits = AuthorizerBuilder("").limits()
    limits.max_time = datetime.timedelta(milliseconds=100)

    def gateway():
        token = Biscuit.from_base64(text, public)
        a = AuthorizerBuilder(request, {"op": "refund.issue", "res": "customer:4821", "amount": 500, "now": now})
        a.set_limits(limits)
        return a.build(token).authorize()

    assert gateway() == 0
    results["biscuit_us"] = per_call_us(gateway)
    results["biscuit_text_bytes"] = len(text)


def bench_tenuo(results: dict) -> None:
    try:
        import tenuo
        from tenuo import Authorizer, Exact, Pattern, Range, SigningKey, Warrant
    except ImportError as e:
        results["tenuo_error"] = f"tenuo is not installed: {e}"
        return
    keys = [SigningKey.generate() for _ in range(4)]
    w = (Warrant.mint_builder().tools(["refund_issue", "crm_read"])
         .constraint("amount", Range(max=10000)).constraint("customer", Pattern("*"))
         .holder(keys[0].public_key).ttl(3600).mint(keys[0]))
    chain = [w]
    for i, (limit, customer) in enumerate([(5000, Pattern("48*")), (2000, Pattern("482*")), (1000, Exact("4821"))]):
        w = w.attenuate({"refund_issue": {"amount": Range(max=limit), "customer": customer}}, keys[i],
                        ttl_seconds=3000 - 1000 * i, holder=keys[i + 1].public_key)
        chain.append(w)
    text = tenuo.encode_warrant_stack(chain)
    authorizer = Authorizer(trusted_roots=[keys[0].public_key])
    args = {"amount": 500, "customer": "4821"}
    sig = chain[-1].sign(keys[3], "refund_issue", args, int(time.time()))

    def gateway():
        stack = tenuo.decode_warrant_stack_base64(text)
        return authorizer.check_chain(stack, "refund_issue", args, signature=sig)

    gateway()
    results["tenuo_pop_us"] = per_call_us(gateway)
    results["tenuo_text_bytes"] = len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the figures to this file")
    opts = ap.parse_args()
    results: dict = {"python": sys.version.split()[0], "baton": "bindings/python (release)",
                     "load_average_at_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    bench_baton(results)
    bench_biscuit(results)
    bench_tenuo(results)
    rows = [
        ("Baton, 4 blocks, cold (text → verified → authorized)", "baton_cold_us"),
        ("  the same in Rust", "rust_cold_us"),
        ("  Python overhead", "python_overhead_cold_us"),
        ("Baton, 4 blocks, cached", "baton_cached_us"),
        ("  the same in Rust", "rust_cached_us"),
        ("  Python overhead", "python_overhead_cached_us"),
        ("Baton, cached, verify() then authorize()", "baton_cached_two_calls_us"),
        ("Baton, 4 blocks holder-bound + proof, cold", "baton_bound_cold_us"),
        ("biscuit-python, 4 blocks (no cache)", "biscuit_us"),
        ("tenuo, 4 warrants + PoP (no cache)", "tenuo_pop_us"),
    ]
    for label, key in rows:
        if key in results:
            print(f"{label:58} {results[key]:9.2f} µs")
    for key in ("biscuit_error", "tenuo_error"):
        if key in results:
            print(results[key])
    print(f"machine: {results['cpus']} CPUs, load average {results['load_average_at_start']:.2f} at start; "
          f"Python {results['python']}")
    print("token text bytes: " + ", ".join(f"{k.removesuffix('_text_bytes')} {v}" for k, v in results.items() if k.endswith("_text_bytes")))
    if opts.json:
        pathlib.Path(opts.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
