"""The report's Markdown tables, one function per table, from aggregated rows.

Each takes rows as ``analysis.aggregate`` returns them (or the exactness and
projection dicts) and returns a GitHub-flavoured Markdown table; cells come
from the rows alone, formatted by ``_f`` (numbers, booleans) and ``_x`` (ratios).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


MODE_ORDER = {"cloud-only": 0, "edge-only": 1, "sync": 2, "pipeline": 3, "cloud-led": 4, "auto": 5}
"""The order of the modes within one configuration's rows."""


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        rows,
        key=lambda r: (r["rate_mbit"], r["rtt_ms"], r["gamma"], r["depth"], MODE_ORDER[r["mode"]]),
    )


def table1(rows: list[dict[str, Any]]) -> str:
    """The paper's Table 1 shape, one row per (link, mode)."""
    headers = [
        "rate Mbit/s",
        "RTT ms",
        "mode",
        "tok/s",
        "x cloud-only",
        "x sync",
        "accept len",
        "TTFT ms",
        "ms/round",
        "T_draft ms",
        "T_verify ms",
        "B up/tok",
        "B down/tok",
        "fwd/tok",
    ]
    body = [
        [
            _f(r["rate_mbit"], 0),
            _f(r["rtt_ms"], 0),
            r["mode"],
            f"{r['tok_per_s']:.1f} ± {r['tok_per_s_sd']:.1f}",
            _x(r["vs_cloud_only"]),
            _x(r["vs_sync"]),
            # cloud-led has no rounds: every forward streams a verdict
            _f(r["mean_accept_len"], 2) if r["mode"] != "cloud-led" else "-",
            _f(r["ttft_ms"], 0),
            _f(r["round_ms"]) if r["mode"] != "cloud-led" else "-",
            _f(r["t_draft_ms"]) if r["mode"] in ("sync", "pipeline", "cloud-led") else "-",
            _f(r["t_verify_ms"]),
            _f(r["up_bytes_per_token"]),
            _f(r["down_bytes_per_token"]),
            _f(r["forwards_per_token"], 2),
        ]
        for r in _sorted(rows)
    ]
    return _table(headers, body)


def model_table(rows: list[dict[str, Any]]) -> str:
    """Measured tok/s beside the time model's and the simulator's, per configuration."""
    headers = [
        "rate Mbit/s",
        "RTT ms",
        "gamma",
        "depth",
        "mode",
        "measured tok/s",
        "model tok/s",
        "measured/model",
        "simulated tok/s",
        "simulated/measured - 1",
    ]
    body = []
    for r in _sorted(rows):
        model, sim = r.get("model_tok_per_s"), r.get("sim_tok_per_s")
        body.append(
            [
                _f(r["rate_mbit"], 0),
                _f(r["rtt_ms"], 0),
                str(r["gamma"]),
                str(r["depth"]),
                r["mode"],
                _f(r["tok_per_s"]),
                _f(model),
                _f(r["tok_per_s"] / model, 2) if model else "-",
                _f(sim),
                f"{sim / r['tok_per_s'] - 1:+.1%}" if sim else "-",
            ]
        )
    return _table(headers, body)


def scheme_table(rows: list[dict[str, Any]]) -> str:
    """One row per (scheme, mode): speed, acceptance, wire cost and exactness."""
    headers = [
        "scheme",
        "T",
        "mode",
        "tok/s",
        "x cloud-only",
        "x sync",
        "accept len",
        "B up/tok",
        "B down/tok",
        "exact",
    ]
    body = [
        [
            r["scheme"],
            _f(r.get("temperature", 0.0)),
            r["mode"],
            _f(r["tok_per_s"]),
            _x(r["vs_cloud_only"]),
            _x(r["vs_sync"]),
            _f(r["mean_accept_len"], 2),
            _f(r["up_bytes_per_token"]),
            _f(r["down_bytes_per_token"]),
            _f(r["exact"]),
        ]
        for r in sorted(rows, key=lambda r: (r["scheme"], MODE_ORDER[r["mode"]]))
    ]
    return _table(headers, body)


def sweep_table(rows: list[dict[str, Any]], field: str) -> str:
    """One row per value of field (``gamma`` or ``depth``) and mode."""
    headers = [field, "mode", "tok/s", "x sync", "accept len", "model tok/s", "sim tok/s"]
    body = [
        [
            str(r[field]),
            r["mode"],
            _f(r["tok_per_s"]),
            _x(r["vs_sync"]),
            _f(r["mean_accept_len"], 2),
            _f(r.get("model_tok_per_s")),
            _f(r.get("sim_tok_per_s")),
        ]
        for r in sorted(rows, key=lambda r: (r[field], MODE_ORDER[r["mode"]]))
    ]
    return _table(headers, body)


def exactness_table(ex: dict[str, Any]) -> str:
    """Per (scheme, temperature): the p-values and TVs of the exactness report."""
    headers = [
        "scheme",
        "T",
        "n",
        "rejections",
        "pos 1: chi2 p",
        "TV (floor)",
        "pos 2: chi2 p",
        "TV (floor)",
        "exact PIT p, pos 0 / 1",
        "split: truncated mass per rejection",
    ]
    body = []
    for r in ex["rows"]:
        pos = r["positions"]

        def two(i: int, pos: list[dict[str, Any]] = pos) -> list[str]:
            p = pos[i]
            if "p_value" not in p:
                return ["(reference)", "-"]
            return [f"{p['p_value']:.3f}", f"{p['tv']:.3f} ({p['tv_floor']:.3f})"]

        pit = " / ".join(f"{p['pit_p_value']:.3f}" for p in pos if "pit_p_value" in p)
        trunc = (
            f"mean {r['truncated_mass_mean']:.3f}, max {r['truncated_mass_max']:.3f} "
            f"({r['inexact_rejections']} of {r['rejections']} inexact)"
            if r["scheme"] == "split"
            else "-"
        )
        body.append(
            [
                r["scheme"],
                _f(r["temperature"]),
                str(r["n"]),
                str(r["rejections"]),
                *two(1),
                *two(2),
                pit,
                trunc,
            ]
        )
    return _table(headers, body)


def projection_table(rows: list[dict[str, Any]]) -> str:
    """Simulated tok/s per regime and acceptance profile (``analysis.project``)."""
    headers = [
        "regime (simulator inputs)",
        "acceptance",
        "cloud-only tok/s",
        "sync tok/s",
        "sync x cloud",
        "pipeline d2 tok/s",
        "d2 x cloud",
        "d2 x sync",
        "pipeline d3 tok/s",
        "d3 x cloud",
        "d3 x sync",
    ]
    body = [
        [
            r["regime"],
            r["acceptance"],
            _f(r["cloud_only"]),
            _f(r["sync"]),
            _x(r["sync_vs_cloud_only"]),
            _f(r["pipeline_d2"]),
            _x(r["pipeline_d2_vs_cloud_only"]),
            _x(r["pipeline_d2_vs_sync"]),
            _f(r["pipeline_d3"]),
            _x(r["pipeline_d3_vs_cloud_only"]),
            _x(r["pipeline_d3_vs_sync"]),
        ]
        for r in rows
    ]
    return _table(headers, body)


def error_table(errs: dict[str, dict[str, float]]) -> str:
    """Per mode: how far a prediction is from the measured tok/s (``analysis.errors``)."""
    order = [m for m in ("all", *MODE_ORDER) if m in errs]
    return _table(
        ["mode", "runs", "mean \\|error\\|", "max \\|error\\|", "runs within 10%"],
        [
            [
                m,
                str(errs[m]["runs"]),
                f"{errs[m]['mean']:.1%}",
                f"{errs[m]['max']:.1%}",
                f"{errs[m]['within_10pct']:.0%}",
            ]
            for m in order
        ],
    )


def in_group(rows: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    """The rows measured for one sweep group (``grid``, ``schemes``, ``gamma``, ``depth``)."""
    return [r for r in rows if group in r["groups"]]


def base_link(result: dict[str, Any]) -> dict[str, Any]:
    """The plan's base point as a row's link fields."""
    p = result["plan"]
    return {"rtt_ms": p["base_rtt"], "rate_mbit": p["base_rate"]}


def adaptive_table(rows: list[dict[str, Any]]) -> str:
    """Per cell (scheme, link): auto against the fastest fixed configuration, and
    cloud-led against cloud-only, with target forwards per token."""
    headers = [
        "scheme", "rate Mbit/s", "RTT ms", "best fixed", "tok/s", "auto tok/s", "auto / best",
        "auto chose", "cloud-led tok/s", "cloud-led / cloud-only", "fwd/tok: cloud-only",
        "cloud-led", "auto",
    ]  # fmt: skip
    body = []
    for a in sorted(
        (r for r in rows if r["mode"] == "auto"),
        key=lambda r: (r["scheme"], r["rate_mbit"], r["rtt_ms"]),
    ):
        cell = [
            r
            for r in rows
            if (r["scheme"], r["rtt_ms"], r["rate_mbit"])
            == (a["scheme"], a["rtt_ms"], a["rate_mbit"])
        ]
        only = next((r for r in cell if r["mode"] == "cloud-only"), None)
        led = next((r for r in cell if r["mode"] == "cloud-led"), None)
        best = max(
            (r for r in cell if r["mode"] not in ("auto", "edge-only")),
            key=lambda r: r["tok_per_s"],
            default=None,
        )
        body.append([
            a["scheme"], _f(a["rate_mbit"], 0), _f(a["rtt_ms"], 0), a.get("best_fixed") or "-",
            _f(best["tok_per_s"]) if best else "-", _f(a["tok_per_s"]),
            _x(a.get("vs_best_fixed")),
            ", ".join(f"{k} x{v}" for k, v in sorted((a.get("chose") or {}).items())),
            _f(led["tok_per_s"]) if led else "-", _x(led["vs_cloud_only"]) if led else "-",
            _f(only["forwards_per_token"], 2) if only else "-",
            _f(led["forwards_per_token"], 2) if led else "-", _f(a["forwards_per_token"], 2),
        ])  # fmt: skip
    return _table(headers, body)


def paper_table(rows: list[dict[str, Any]]) -> str:
    """The simulator at the paper's costs: every mode, the bound and the checks."""
    names = ("cloud-only", "sync", "pipeline", "cloud-led", "auto")
    headers = ["cell", "RTT ms", *names, "paper", "paper's cycle", "cloud AR", "bound",
               "best / bound", "checks"]  # fmt: skip
    body = [
        [
            r["cell"], _f(r["rtt_ms"], 0),
            *(f"{r['modes'][n]['tok_per_s']:.2f} ({r['modes'][n]['forwards_per_token']:.2f})"
              for n in names),
            _f(r["paper_tok_per_s"], 2), _f(r["paper_cycle_tok_per_s"], 2),
            _f(r["cloud_ar_tok_per_s"], 2), _f(r["bound_tok_per_s"], 1),
            _x(r["best_ours_vs_bound"]),
            ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in r["checks"].items()),
        ]
        for r in rows
    ]  # fmt: skip
    return _table(headers, body)
