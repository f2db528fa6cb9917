#!/bin/sh
# Prints each benchmark figure beside its floor and their ratio, from the
# medians criterion stored by `cargo bench --features forge --bench token`.
#
#   benches/ratios.sh [criterion-dir]    (default: target/criterion)
#
# Targets (spec): verify/cold/4 <= 1.15x floor, verify/warm <= 5 us,
# attenuate <= 1.2x floor.
set -eu
dir="${1:-${CARGO_TARGET_DIR:-target}/criterion}"
exec python3 - "$dir" <<'PY'
import json, os, sys

root = sys.argv[1]

def median(group, name):
    """Median in ns, or None when the benchmark has not been run."""
    # Criterion writes "cold/4" as the directory "cold_4".
    path = os.path.join(root, group, name.replace("/", "_"), "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None

def fmt(ns):
    if ns is None:
        return "-"
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"

rows = [("mint", "figure", "floor", None), ("mint", "figure_seeded", "floor", None),
        ("attenuate", "figure", "floor", 1.2), ("attenuate", "figure_seeded", "floor", 1.2)]
for n in range(1, 9):
    rows.append(("verify", f"cold/{n}", f"floor/{n}", 1.15 if n == 4 else None))
for n in range(2, 9):
    rows.append(("verify", f"prefix/{n}", f"prefix_floor/{n}", None))
rows += [("holder", "unbound_cold/4", "unbound_floor/4", 1.15),
         ("holder", "bound_cold/4", "bound_floor/4", 1.15),
         ("holder", "bound_warm/4", "bound_warm_floor/4", None)]

print(f"{'figure':<26}{'median':>12}{'floor':>12}{'ratio':>8}  target")
for group, fig, floor, target in rows:
    a, b = median(group, fig), median(group, floor)
    ratio = f"{a / b:.2f}x" if a and b else "-"
    verdict = ""
    if target and a and b:
        verdict = f"<= {target}x " + ("ok" if a / b <= target else "MISSED")
    print(f"{group + '/' + fig:<26}{fmt(a):>12}{fmt(b):>12}{ratio:>8}  {verdict}")

print()
print(f"{'absolute':<26}{'median':>12}")
for n in range(1, 9):
    a = median("verify", f"warm/{n}")
    verdict = ("ok" if a <= 5000 else "MISSED") if a else ""
    print(f"{'verify/warm/' + str(n):<26}{fmt(a):>12}  <= 5 us {verdict}")
for name in ["parse/1", "parse/4", "parse/8", "keygen", "decompress", "getrandom"]:
    print(f"{'parts/' + name:<26}{fmt(median('parts', name)):>12}")
PY
