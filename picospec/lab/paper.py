"""The paper's regime: every mode in the simulator at the paper's published costs.

``picospec sim --paper`` runs the simulator (the real sessions on a virtual
clock) for the four cells of the paper's Table 1 (Qwen3-0.6B -> Qwen3-32B and
Llama-3.2-1B -> Llama-3.1-70B, on GSM8K and HumanEval) at RTT 0 to 200 ms, with
the per-round costs the paper publishes (``../shared/reference``: the cloud's
autoregressive step, T_verify for gamma + 1 = 5 tokens, T_draft for 4 tokens,
TTFT) and the acceptance per position that its mean acceptance length implies
(i.i.d. by position, solved from (1 - a^5) / (1 - a) = length). The paper does
not give the RTT, so every RTT is tried. A forward over n tokens costs the AR
step at n = 1 and T_verify at n = 5, linear in between and beyond (the
simulator's cost tables extend linearly).

For each cell and RTT it reports tok/s and target forwards per token of every
mode and of ``auto`` (``edge/plan.py``'s choice from the same costs and
acceptance), the physical bound min(drafter rate, (gamma + 1) / T_verify), and
checks computed from the numbers: the best of ``cloud-led`` and ``auto``
against the paper's PicoSpec figure at RTT <= 20 ms, and against the cloud
alone at every RTT (``cloud-only`` simulated at the same costs, its TTFT
included; the paper's cloud AR figure is printed beside it). The paper's
throughput figures are larger than its own per-cycle figures give (Table 2:
mean acceptance length / TPOT, e.g. 2.50 / 148.84 ms = 16.8 tok/s for Qwen
GSM8K against the 20.19 it reports), so that figure ("cycle") is printed and
checked too.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from picospec.codec.errors import ConfigError
from picospec.codec.messages import MAX_BLOCK
from picospec.codec.scheme import Mode, Scheme
from picospec.edge.plan import best_plan, candidates

from .profiles import CloudProfile, EdgeProfile, LinkProfile, costs_of
from .sim import IidAcceptance, Scenario, SimResult, simulate

RTTS = (0.0, 20.0, 50.0, 100.0, 200.0)
GAMMA = 4
DEPTH = 3
SOURCE = "arXiv 2603.19133 v1, Tables 1-2 (a published figure used as a simulator input)"


@dataclass(frozen=True)
class Cell:
    """One column of the paper's Table 1 and its row of Table 2."""

    name: str
    ar_ms: float
    """The cloud's autoregressive step."""
    verify_ms: float
    """T_verify: one verify round over gamma + 1 = 5 tokens."""
    draft4_ms: float
    """T_draft: the drafter drafting 4 tokens."""
    ttft_ms: float
    accept_len: float
    """Mean acceptance length (accepted drafts + the correction or bonus)."""
    paper_tok_s: float
    ar_tok_s: float
    tpot_ms: float
    """Table 2's TPOT: the time of one draft/verify cycle."""

    @property
    def implied_tok_s(self) -> float:
        """What the paper's own per-cycle figures give: acceptance length / TPOT."""
        return 1e3 * self.accept_len / self.tpot_ms

    @property
    def accept(self) -> float:
        """The i.i.d. per-position acceptance whose mean length at gamma 4 is accept_len."""
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            length = sum(mid**j for j in range(GAMMA + 1))
            lo, hi = (mid, hi) if length < self.accept_len else (lo, mid)
        return (lo + hi) / 2

    def profiles(self) -> tuple[EdgeProfile, CloudProfile]:
        slope = (self.verify_ms - self.ar_ms) / GAMMA
        edge = EdgeProfile(f"{self.name} drafter", draft_ms=self.draft4_ms / GAMMA, source=SOURCE)
        cloud = CloudProfile(
            f"{self.name} target",
            verify_ms=tuple(self.ar_ms + slope * (n - 1) for n in range(1, GAMMA + 2)),
            prefill_ms=self.ttft_ms,
            source=SOURCE,
        )
        return edge, cloud


CELLS = (
    Cell("qwen-gsm8k", 72.0, 87.35, 97.46, 143.99, 2.50, 20.19, 13.89, 148.84),
    Cell("qwen-humaneval", 70.5, 78.04, 97.17, 155.11, 1.88, 16.04, 14.18, 160.88),
    Cell("llama-gsm8k", 146.0, 166.46, 171.05, 295.58, 4.29, 17.22, 6.87, 272.89),
    Cell("llama-humaneval", 146.0, 182.96, 172.41, 369.02, 4.90, 19.88, 6.86, 272.93),
)
"""Qwen HumanEval's AR step is 1000 / 14.18 ms; the rest as published."""


def _mean(results: list[SimResult]) -> tuple[float, float]:
    n = sum(r.n_tokens for r in results)
    fwd = sum(r.target_forwards for r in results) / n if n else 0.0
    return statistics.fmean(r.tok_per_s for r in results), fwd


def run_cell(cell: Cell, rtt_ms: float, *, tokens: int = 256, seeds: int = 4) -> dict[str, Any]:
    """Every mode and auto in one cell at one RTT."""
    edge, cloud = cell.profiles()
    link = LinkProfile(f"RTT {rtt_ms:g} ms", rtt_ms=rtt_ms, rate_mbit=100.0, source="swept")
    accept = [cell.accept] * MAX_BLOCK
    cands = candidates(Scheme.GUMBEL, MAX_BLOCK, DEPTH)
    costs = costs_of(edge, link, cloud, max(g * d for _, g, d in cands) + 2)

    def sim(mode: Mode, gamma: int, depth: int) -> tuple[float, float]:
        sc = Scenario(mode.value, tokens, gamma=gamma, depth=depth, scheme="gumbel")
        return _mean(
            [simulate(sc, edge, link, cloud, IidAcceptance(accept, seed=s)) for s in range(seeds)]
        )

    modes: dict[str, dict[str, Any]] = {}
    for mode in (Mode.CLOUD_ONLY, Mode.SYNC, Mode.PIPELINE, Mode.CLOUD_LED):
        tok_s, fwd = sim(mode, GAMMA, DEPTH)
        modes[mode.value] = {"tok_per_s": tok_s, "forwards_per_token": fwd}
    plan = best_plan(Scheme.GUMBEL, costs, accept, cands, n_tokens=tokens)
    tok_s, fwd = sim(plan.mode, plan.gamma, plan.depth)
    modes["auto"] = {"tok_per_s": tok_s, "forwards_per_token": fwd, "plan": plan.reason}
    verify = costs.forward(GAMMA + 1) + costs.round_overhead
    bound = min(1 / costs.draft, (GAMMA + 1) / verify)
    ours = max(modes["cloud-led"]["tok_per_s"], modes["auto"]["tok_per_s"])
    # the cloud alone at the same costs, TTFT included, in the same run
    checks = {"beats_cloud_only": ours >= modes["cloud-only"]["tok_per_s"]}
    if rtt_ms <= 20:
        checks["beats_paper"] = ours >= cell.paper_tok_s
        checks["beats_paper_cycle"] = ours >= cell.implied_tok_s
    return {
        "cell": cell.name,
        "rtt_ms": rtt_ms,
        "accept_per_position": round(cell.accept, 4),
        "paper_tok_per_s": cell.paper_tok_s,
        "paper_cycle_tok_per_s": cell.implied_tok_s,
        "cloud_ar_tok_per_s": cell.ar_tok_s,
        "bound_tok_per_s": bound,
        "best_ours_vs_bound": ours / bound,
        "modes": modes,
        "checks": checks,
    }


def paper_regime(*, tokens: int = 256, seeds: int = 4) -> list[dict[str, Any]]:
    if tokens < 1 or seeds < 1:
        raise ConfigError("--tokens and --seeds must be >= 1")
    return [run_cell(c, r, tokens=tokens, seeds=seeds) for c in CELLS for r in RTTS]


MISS_MODES = (Mode.PIPELINE, Mode.CLOUD_LED)
MISS_GAMMAS = (1, 2, 3, 4, 6)
MISS_DEPTHS = (1, 2, 3, 6)


def misses(*, rtt_ms: float = 20.0, tokens: int = 256, seeds: int = 4) -> list[dict[str, Any]]:
    """The issue's two cheaper misses, at the paper's costs: for each cell and
    speculative mode, the best (gamma, depth) of a grid; that best with the
    drafter step in progress stopped when a rejection arrives (the simulator's
    ``abandon_on_rejection``); and the best of the same grid with a shorter first
    block after each rejection (``first_gamma``, 1..gamma - 1). Each row says
    what the option gains over the best without it, on the same seeds."""
    link = LinkProfile(f"RTT {rtt_ms:g} ms", rtt_ms=rtt_ms, rate_mbit=100.0, source="swept")
    out = []

    def rate(
        cell: Cell, mode: Mode, g: int, d: int, first: int = 0, abandon: bool = False
    ) -> float:
        edge, cloud = cell.profiles()
        sc = Scenario(mode.value, tokens, gamma=g, depth=d, scheme="gumbel",
                      first_gamma=first, abandon_on_rejection=abandon)  # fmt: skip
        accept = [cell.accept] * MAX_BLOCK
        runs = [simulate(sc, edge, link, cloud, IidAcceptance(accept, seed=s))
                for s in range(seeds)]  # fmt: skip
        return _mean(runs)[0]

    for cell in CELLS:
        for mode in MISS_MODES:
            grid = [(g, d) for g in MISS_GAMMAS for d in MISS_DEPTHS]
            base, g, d = max((rate(cell, mode, g, d), g, d) for g, d in grid)
            abandon = rate(cell, mode, g, d, abandon=True)
            first, fg_g, fg_d, fg = max(
                (rate(cell, mode, g2, d2, f), g2, d2, f) for g2, d2 in grid for f in range(1, g2)
            )
            out.append({
                "cell": cell.name, "rtt_ms": rtt_ms, "mode": mode.value,
                "best": {"tok_per_s": base, "gamma": g, "depth": d},
                "abandon": {"tok_per_s": abandon, "gain": abandon / base - 1},
                "first_gamma": {"tok_per_s": first, "gamma": fg_g, "depth": fg_d,
                                "first_gamma": fg, "gain": first / base - 1},
            })  # fmt: skip
    return out


def render_misses(rows: list[dict[str, Any]]) -> str:
    lines = [
        "cheaper misses at the paper's costs (simulator; gumbel; best over gamma "
        f"{'/'.join(map(str, MISS_GAMMAS))} x depth {'/'.join(map(str, MISS_DEPTHS))})",
        f"{'cell':16} {'RTT':>4} {'mode':10} {'best':>16} {'stop the step':>16} "
        f"{'shorter first block':>28}",
    ]
    for r in rows:
        b, a, f = r["best"], r["abandon"], r["first_gamma"]
        lines.append(
            f"{r['cell']:16} {r['rtt_ms']:4.0f} {r['mode']:10} "
            f"{b['tok_per_s']:6.2f} (g{b['gamma']} d{b['depth']}) "
            f"{a['tok_per_s']:8.2f} ({a['gain']:+.1%}) "
            f"{f['tok_per_s']:8.2f} (g{f['gamma']} d{f['depth']} first {f['first_gamma']}) "
            f"{f['gain']:+.1%}"
        )
    return "\n".join(lines)


def render(rows: list[dict[str, Any]]) -> str:
    names = ("cloud-only", "sync", "pipeline", "cloud-led", "auto")
    head = f"{'cell':16} {'RTT':>4} " + " ".join(f"{n:>14}" for n in names)
    lines = [
        "tok/s (target forwards per token) in the simulator at the paper's costs; "
        "gamma 4, depth 3, scheme gumbel",
        head + f" {'paper':>6} {'cycle':>6} {'AR':>6} {'bound':>6}  checks",
    ]
    for r in rows:
        cells = " ".join(
            f"{r['modes'][n]['tok_per_s']:7.2f} ({r['modes'][n]['forwards_per_token']:.2f})"
            for n in names
        )
        checks = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["checks"].items())
        lines.append(
            f"{r['cell']:16} {r['rtt_ms']:4.0f} {cells} {r['paper_tok_per_s']:6.2f} "
            f"{r['paper_cycle_tok_per_s']:6.2f} {r['cloud_ar_tok_per_s']:6.2f} "
            f"{r['bound_tok_per_s']:6.2f}  {checks}"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """tok/s against RTT for every mode, one panel per cell, the paper's points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CELLS), figsize=(4.2 * len(CELLS), 3.6), sharey=False)
    for ax, cell in zip(axes, CELLS, strict=True):
        mine = [r for r in rows if r["cell"] == cell.name]
        rtts = [r["rtt_ms"] for r in mine]
        for name in ("cloud-only", "sync", "pipeline", "cloud-led", "auto"):
            style = "--" if name == "auto" else "-"
            ax.plot(rtts, [r["modes"][name]["tok_per_s"] for r in mine], style, marker="o",
                    label=name)  # fmt: skip
        ax.plot(rtts, [r["bound_tok_per_s"] for r in mine], ":", color="grey", label="bound")
        ax.scatter([0, 20], [cell.paper_tok_s] * 2, marker="*", s=120, color="black",
                   label="paper PicoSpec (RTT not given)", zorder=5)  # fmt: skip
        ax.axhline(cell.ar_tok_s, color="black", linewidth=0.6, label="paper cloud AR")
        ax.set_title(f"{cell.name} (a = {cell.accept:.2f})")
        ax.set_xlabel("RTT (ms)")
        ax.set_ylabel("tok/s")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
