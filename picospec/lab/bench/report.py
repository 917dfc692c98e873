"""The ``bench e2e`` report page: one results dict composed into ``RESULTS.md``.

``write(result, out)`` annotates the runs with the time model and the simulator,
aggregates them, projects to the published regimes, and writes ``out/RESULTS.md``,
``out/e2e.json`` and ``out/plots/*.png``; ``picospec bench report FILE --out DIR``
redoes it from a saved results file without re-measuring. The tables
(``tables.py``), the figures (``plots.py``) and the prose (``narrative.py``, every
conclusion decided by the data) are composed here; measured columns come from the
runs alone, the time model's and the simulator's are labelled as such, and the
published regimes appear only as simulator inputs and references.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picospec.lab import paper

from . import analysis, narrative, tables
from .plots import plots
from .results import load, save

__all__ = ["load", "markdown", "write"]


def markdown(
    result: dict[str, Any],
    rows: list[dict[str, Any]],
    figures: list[str],
) -> str:
    """The page, from an annotated result, its aggregated rows and the figures' paths."""
    plan = result["plan"]
    base = tables.base_link(result)
    parts = [
        "# Results: edge-cloud speculative decoding on this machine",
        *narrative.intro(result),
        narrative.regime(result, rows),
        narrative.plan(result),
        "## Validation",
        narrative.validation(result),
        "## Table 1: modes x link (greedy)",
        narrative.table1_notes(),
        tables.table1(tables.in_group(rows, "grid")),
    ]
    parts += [f"![tok/s vs RTT]({f})" for f in figures if f.endswith("tok_s_vs_rtt.png")]
    if any(r["mode"] == "auto" for r in rows):
        parts += [
            "## auto and cloud-led against the fixed modes",
            "Per cell: the fastest fixed configuration measured (cloud-only included), auto "
            "(``edge/plan.py``: the time model's choice from what its edge measured) and "
            "cloud-led (the cloud decodes continuously and takes the drafts that have "
            "arrived), with target forwards per committed token.",
            tables.adaptive_table(rows),
            narrative.adaptive_notes(rows, result["runs"]),
        ]
    parts += [
        "## Time model and simulator against the measurements",
        "Each run is predicted twice from its own measured costs: by the closed-form time "
        "model (`picospec/runtime/timemodel.py`, DESIGN.md section 3 with the depth term) fed with "
        "the run's per-position acceptance, and by the discrete-event simulator "
        "(`picospec/lab/sim.py`) replaying the run's own accept/reject trace.",
        "Simulator error over all runs:",
        tables.error_table(analysis.errors(result["runs"], "sim_tok_per_s")),
        "Time model error over all runs:",
        tables.error_table(analysis.errors(result["runs"], "model_tok_per_s")),
        tables.model_table([r for r in rows if r["scheme"] == "greedy"]),
    ]
    parts += [f"![measured vs predicted]({f})" for f in figures if "measured_vs" in f]
    parts.append(narrative.why(result))
    sch = [
        r
        for r in tables.in_group(rows, "schemes") + tables.in_group(rows, "grid")
        if r["rtt_ms"] == base["rtt_ms"]
        and r["rate_mbit"] == base["rate_mbit"]
        and r["mode"] != "edge-only"
    ]
    for r in sch:
        r["temperature"] = 0.0 if r["scheme"] == "greedy" else plan["temperature"]
    parts += [
        f"## Schemes at RTT {base['rtt_ms']:g} ms, {base['rate_mbit']:g} Mbit/s",
        "Greedy runs at temperature 0, the sampling schemes at the plan's temperature; "
        "speedups are against cloud-only and sync of the same scheme.",
        tables.scheme_table(sch),
    ]
    parts += [f"![bytes per token]({f})" for f in figures if "bytes_per" in f]
    gam = tables.in_group(rows, "gamma")
    dep = [r for r in tables.in_group(rows, "depth") if r["mode"] == "pipeline"]
    if len({r["gamma"] for r in gam}) > 1:
        parts += ["## Block size (gamma)", tables.sweep_table(gam, "gamma")]
    if len({r["depth"] for r in dep}) > 1:
        parts += ["## Pipeline depth", tables.sweep_table(dep, "depth")]
    parts += [f"![gamma and depth]({f})" for f in figures if "gamma_depth" in f]
    if "exactness" in result:
        ex = result["exactness"]
        parts += [
            "## Exactness",
            narrative.exactness_intro(ex),
            tables.exactness_table(ex),
            narrative.exactness_notes(ex, sch),
        ]
    if "paper_regime" in result:
        parts += [
            "## The paper's regime, every mode (simulator)",
            "`picospec sim --paper`: the real sessions on a virtual clock, fed with the "
            "paper's published per-round costs and the per-position acceptance its mean "
            "acceptance length implies (`picospec/lab/paper.py`); tok/s with target "
            "forwards per token in brackets. The RTT is not given by the paper, so it is "
            "swept; the paper's figures are references, not inputs to any choice.",
            tables.paper_table(result["paper_regime"]),
            narrative.paper_notes(result["paper_regime"]),
        ]
        parts += [f"![paper regime]({f})" for f in figures if "paper_regime" in f]
    if "misses" in result:
        parts += [
            "## Cheaper misses, at the paper's costs (simulator)",
            "`picospec sim --paper --misses`: for each cell and speculative mode at RTT "
            "20 ms, the best (gamma, depth) of a grid; that best with the drafter step in "
            "progress stopped the instant a rejection arrives (a costless abort: the most "
            "llama.cpp's abort callback could give); and the best of the same grid with a "
            "shorter first block after each rejection. Same seeds throughout.",
            "```\n" + paper.render_misses(result["misses"]) + "\n```",
            narrative.misses_notes(result["misses"]),
        ]
    if "projection" in result:
        parts += [
            "## Projection to the paper's regimes (simulator)",
            narrative.projection_intro(result),
            tables.projection_table(result["projection"]),
            narrative.projection_notes(result),
        ]
    return "\n\n".join(parts) + "\n"


def write(
    result: dict[str, Any],
    out: str | Path,
) -> Path:
    """Annotate, aggregate and write everything; returns the Markdown file's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    analysis.annotate(result)
    result["projection"] = analysis.project(_acceptance_profiles(result))
    result["paper_regime"] = paper.paper_regime()
    result["misses"] = paper.misses()
    rows = analysis.aggregate(result["runs"])
    figures = plots(result, rows, out / "plots")
    paper.plot(result["paper_regime"], out / "plots" / "paper_regime.png")
    figures.append("plots/paper_regime.png")
    save(result, out)
    md = out / "RESULTS.md"
    md.write_text(markdown(result, rows, figures))
    return md


def _acceptance_profiles(result: dict[str, Any]) -> dict[str, list[float]]:
    """The projection's acceptance: this run's greedy pipeline traces, and fixed rates."""
    from picospec.runtime.timemodel import per_position

    gamma = result["plan"]["base_gamma"]
    blocks = [
        tuple(b)
        for r in result["runs"]
        if r["scheme"] == "greedy" and r["mode"] == "pipeline" and r["gamma"] == gamma
        for b in r["blocks"]
    ]
    out = {}
    if blocks:
        measured = per_position(blocks, gamma)
        out["measured here: " + "/".join(f"{a:.2f}" for a in measured)] = measured
    for alpha in (0.6, 0.8, 0.9, 0.95):
        out[f"{alpha:g} per position"] = [alpha] * gamma
    return out
