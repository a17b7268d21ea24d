#!/usr/bin/env python3
"""Prints criterion medians from target/criterion as Markdown tables.

Usage: python3 benches/report.py [group-prefix ...]
One table per criterion group: a row per function, a column per parameter
(criterion's value string), each cell the median of the last run and, in
parentheses, its ratio to the first column of the row. All from one run.
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
prefixes = sys.argv[1:] or [""]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


groups = {}
# In the order the benchmarks ran, so the first column is the first one measured.
for est in sorted(root.glob("**/new/estimates.json"), key=lambda p: p.stat().st_mtime):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    group = bench["group_id"]
    if not any(group.startswith(p) for p in prefixes):
        continue
    median = json.loads(est.read_text())["median"]["point_estimate"]
    fn = bench.get("function_id") or "-"
    col = bench.get("value_str") or "-"
    groups.setdefault(group, {}).setdefault(fn, {})[col] = median

for group, fns in groups.items():
    if all(list(row) == ["-"] for row in fns.values()):
        # One value per function: a column of medians, ratios to the first row.
        print(f"\n| {group} | median | ratio to the first row |\n|---|---|---|")
        base = next(iter(fns.values()))["-"]
        for fn, row in fns.items():
            print(f"| {fn} | {fmt(row['-'])} | {row['-'] / base:.2f} |")
        continue
    cols = []
    for row in fns.values():
        cols += [c for c in row if c not in cols]
    print(f"\n| {group} | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for fn, row in fns.items():
        base = row.get(cols[0])
        cells = []
        for c in cols:
            if c not in row:
                cells.append("")
            elif base:
                cells.append(f"{fmt(row[c])} ({row[c] / base:.2f})")
            else:
                cells.append(fmt(row[c]))
        print(f"| {fn} | " + " | ".join(cells) + " |")
