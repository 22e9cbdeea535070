#!/usr/bin/env python3
"""The scrape-latency chart with matplotlib: plot.py RESULTS.json OUT.png

Sequential scrape latency p50 (solid) and p99 (dashed) against the number of
volumes, kubedf (blue) and node_exporter (orange), plain (left) and gzip
(right), log scale. bench/pngplot.py draws the same without matplotlib.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from pngplot import COLORS, chart_data  # noqa: E402


def main(argv):
    results, out = argv
    data = chart_data(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, enc in zip(axes, ("plain", "gzip")):
        for kind, label in (("kubedf", "kubedf"), ("node_exporter", "node_exporter 1.5.0")):
            pts = data[enc][kind]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            color = "#%02x%02x%02x" % COLORS[kind]
            ax.plot(xs, [p[1] for p in pts], "-o", color=color, label=f"{label} p50")
            ax.plot(xs, [p[2] for p in pts], "--s", color=color, label=f"{label} p99", alpha=0.85)
        ns = sorted({p[0] for k in data[enc].values() for p in k})
        ax.set_xscale("symlog", linthresh=10)
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("volumes (tmpfs mounts / PVCs)")
        ax.set_title(f"{enc}" + (" (Accept-Encoding: gzip)" if enc == "gzip" else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("sequential scrape latency (ms, log)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("Sequential scrape latency against the number of volumes (lower is better)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
