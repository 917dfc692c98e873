"""The report's figures: matplotlib PNGs from the runs and the aggregated rows.

matplotlib is imported inside ``plots`` (with the Agg backend), so the rest of
the report, and anything importing this module, runs without it.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError

from .tables import base_link, in_group


def plots(result: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> list[str]:
    """The PNGs; returns their paths relative to out."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("the plots need matplotlib: pip install -e .[bench]") from e
    out.mkdir(parents=True, exist_ok=True)
    written = []
    grid = [r for r in in_group(rows, "grid") if r["mode"] != "edge-only"]
    rates = sorted({r["rate_mbit"] for r in grid})
    fig, axes = plt.subplots(
        1, len(rates), figsize=(4.2 * len(rates), 3.6), sharey=True, squeeze=False
    )
    for ax, rate in zip(axes[0], rates, strict=True):
        for mode in ("cloud-only", "sync", "pipeline", "cloud-led", "auto"):
            pts = sorted(
                (r["rtt_ms"], r["tok_per_s"], r["tok_per_s_sd"])
                for r in grid
                if r["rate_mbit"] == rate and r["mode"] == mode
            )
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    yerr=[p[2] for p in pts],
                    marker="o",
                    capsize=3,
                    label=mode,
                )
        edge = [r["tok_per_s"] for r in rows if r["mode"] == "edge-only"]
        if edge:
            ax.axhline(statistics.fmean(edge), color="grey", ls=":", label="edge-only (drafter)")
        ax.set_title(f"{rate:g} Mbit/s")
        ax.set_xlabel("RTT (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("tokens/s (greedy)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"{result['pair']}: throughput vs round-trip time (measured)")
    fig.tight_layout()
    fig.savefig(out / "tok_s_vs_rtt.png", dpi=110)
    plt.close(fig)
    written.append("plots/tok_s_vs_rtt.png")

    base = base_link(result)
    at_base = [
        r
        for r in rows
        if r["rtt_ms"] == base["rtt_ms"]
        and r["rate_mbit"] == base["rate_mbit"]
        and r["mode"] in ("sync", "pipeline")
        and r["gamma"] == result["plan"]["base_gamma"]
        and (r["mode"] == "sync" or r["depth"] == result["plan"]["base_depth"])
    ]
    labels = [f"{r['scheme']}\n{r['mode']}" for r in at_base]
    fig, ax = plt.subplots(figsize=(1.2 * max(len(labels), 4) + 1, 3.6))
    xs = range(len(labels))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["up_bytes_per_token"] for r in at_base],
        0.4,
        label="up (edge to cloud)",
    )
    ax.bar([x + 0.2 for x in xs], [r["down_bytes_per_token"] for r in at_base], 0.4, label="down")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("bytes per generated token")
    ax.set_title("Wire cost per scheme (framed messages, measured)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bytes_per_token.png", dpi=110)
    plt.close(fig)
    written.append("plots/bytes_per_token.png")

    runs = result["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), squeeze=False)
    for ax, field, title in (
        (axes[0][0], "model_tok_per_s", "time model"),
        (axes[0][1], "sim_tok_per_s", "simulator (replayed trace)"),
    ):
        for mode in ("cloud-only", "edge-only", "sync", "pipeline"):
            got = [(r[field], r["tok_per_s"]) for r in runs if r["mode"] == mode and r.get(field)]
            if got:
                ax.scatter([p[0] for p in got], [p[1] for p in got], s=12, label=mode)
        top = max([r["tok_per_s"] for r in runs] + [r.get(field) or 0 for r in runs]) * 1.05
        ax.plot([0, top], [0, top], "k-", lw=0.8)
        ax.fill_between(
            [0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.15, label="±10%"
        )
        ax.set_xlabel(f"predicted tok/s ({title})")
        ax.set_ylabel("measured tok/s")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "measured_vs_predicted.png", dpi=110)
    plt.close(fig)
    written.append("plots/measured_vs_predicted.png")

    gam, dep = (
        in_group(rows, "gamma"),
        [r for r in in_group(rows, "depth") if r["mode"] == "pipeline"],
    )
    if len({r["gamma"] for r in gam}) > 1 or len({r["depth"] for r in dep}) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
        for mode in ("sync", "pipeline"):
            pts = sorted(
                (r["gamma"], r["tok_per_s"], r.get("sim_tok_per_s"))
                for r in gam
                if r["mode"] == mode
            )
            axes[0][0].plot(
                [p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{mode} measured"
            )
            axes[0][0].plot(
                [p[0] for p in pts], [p[2] for p in pts], "x--", label=f"{mode} simulated"
            )
        axes[0][0].set_xlabel("gamma (drafts per block)")
        axes[0][0].set_ylabel("tokens/s")
        axes[0][0].legend(fontsize=7)
        pts = sorted((r["depth"], r["tok_per_s"], r.get("sim_tok_per_s")) for r in dep)
        axes[0][1].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="pipeline measured")
        axes[0][1].plot([p[0] for p in pts], [p[2] for p in pts], "x--", label="pipeline simulated")
        axes[0][1].set_xlabel("depth (blocks in flight)")
        axes[0][1].legend(fontsize=7)
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        fig.suptitle(f"RTT {base['rtt_ms']:g} ms, {base['rate_mbit']:g} Mbit/s, greedy")
        fig.tight_layout()
        fig.savefig(out / "gamma_depth.png", dpi=110)
        plt.close(fig)
        written.append("plots/gamma_depth.png")
    return written
