"""Plots the fan-out sweep of bench/results.json into bench/fanout.png: delivered
messages/s, p99 latency and server CPU per delivered message against the number of
subscribers, one line per server.

    .venv/bin/python bench/plot.py [bench/results.json]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "bloomr": ("bloomr (history on)", "tab:green", "o"),
    "node": ("Node socket.io 4.8 (no history)", "tab:blue", "s"),
    "pysio": ("python-socketio 5 (no history)", "tab:orange", "^"),
    "cluster": ("bloomr cluster (2 nodes, history in Redis)", "tab:purple", "D"),
}


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.json")
    results = json.loads(source.read_text())
    points = results["scenarios"]["fanout"]["points"]
    subs = [p["plan"]["subs"] for p in points]
    offered = [p["plan"]["subs"] * p["plan"]["rate"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    panels = [
        ("delivered_per_s", "delivered messages/s (all subscribers)", "linear"),
        ("p99_ms", "p99 publish-to-receive latency (ms)", "log"),
        ("cpu_us_per_msg", "server CPU µs per delivered message", "log"),
    ]
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for target in results["targets"]:
            name, color, marker = STYLE.get(target, (target, None, "o"))
            ys = [p["median"][target][key] for p in points]
            ax.plot(subs, ys, marker=marker, color=color, label=name, linewidth=2)
        if key == "delivered_per_s":
            ax.plot(subs, offered, linestyle=":", color="grey", label="offered")
        ax.set_xscale("log")
        ax.set_yscale(scale)
        ax.set_xticks(subs)
        ax.set_xticklabels([str(s) for s in subs])
        if scale == "log":
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("subscribers")
        ax.set_title(label, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        if key == "delivered_per_s":
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    axes[0].legend(fontsize=9)
    machine = results["machine"]
    fig.suptitle(
        f"Fan-out, {results['date'][:10]}: {machine['nproc']} CPUs ({machine['cpu_model']}); "
        "server and load generator share the machine",
        fontsize=12,
    )
    fig.tight_layout()
    out = source.with_name("fanout.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
