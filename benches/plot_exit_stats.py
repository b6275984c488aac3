#!/usr/bin/env python3
"""Plot an `rvmm -exit-stats json=FILE` report: one log-scale histogram per exit kind and device.

Usage: benches/plot_exit_stats.py STATS.json OUT.png [--vcpu N]
Uses the merged `total` section unless --vcpu picks one vCPU. Needs matplotlib
(pip install matplotlib, or apt-get install python3-matplotlib).
The JSON schema is described in docs/EXIT-STATS.md.
"""

import argparse
import json
import math
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("png")
    ap.add_argument("--vcpu", type=int)
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_exit_stats.py: needs matplotlib (pip install matplotlib)")
    with open(args.json) as f:
        report = json.load(f)
    if report.get("schema") != "rvmm-exit-stats/1":
        sys.exit(f"plot_exit_stats.py: {args.json}: unknown schema {report.get('schema')!r}")
    if args.vcpu is None:
        exits, who = report["total"], "all vCPUs"
    else:
        match = [v for v in report["vcpus"] if v["vcpu"] == args.vcpu]
        if not match:
            sys.exit(f"plot_exit_stats.py: no vCPU {args.vcpu} in {args.json}")
        exits, who = match[0]["exits"], f"vCPU {args.vcpu}"
    exits = [e for e in exits if e["count"] > 0]
    if not exits:
        sys.exit("plot_exit_stats.py: no exits in the report")
    cols = min(2, len(exits))
    rows = math.ceil(len(exits) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.2 * rows), squeeze=False)
    for ax, e in zip(axes.flat, exits):
        lo = [b["lo_ns"] for b in e["histogram"]]
        width = [max(b["hi_ns"] - b["lo_ns"], 1) if b["hi_ns"] < 2**63 else b["lo_ns"] for b in e["histogram"]]
        lo = [max(x, 1) for x in lo]
        ax.bar(lo, [b["count"] for b in e["histogram"]], width=width, align="edge", color="#4878a8")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(max(e["p50_ns"], 1), color="#2a2", linestyle="--", label=f"p50 {e['p50_ns']} ns")
        ax.axvline(max(e["p99_ns"], 1), color="#c33", linestyle=":", label=f"p99 {e['p99_ns']} ns")
        title = e["kind"] + (f" {e['device']}" if e.get("device") else "")
        ax.set_title(f"{title}: {e['count']} exits, mean {e['mean_ns']} ns", fontsize=9)
        ax.set_xlabel("time in rvmm per exit (ns)", fontsize=8)
        ax.set_ylabel("exits", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(exits):]:
        ax.axis("off")
    fig.suptitle(f"rvmm exit statistics, {who}, {report['elapsed_ns'] / 1e9:.3f} s")
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)


if __name__ == "__main__":
    main()
