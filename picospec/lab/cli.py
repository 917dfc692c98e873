"""The lab's commands: ``picospec demo``, ``link``, ``bench ...`` and ``sim``.

``register`` adds their parsers to the ``picospec`` command; each handler imports
what it runs only when it runs, so building the parser loads no lab module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from picospec.codec.errors import ConfigError


def _cmd_bench_codec(args: argparse.Namespace) -> int:
    from picospec.lab.bench.codec import run

    result = run(
        vocab=args.vocab,
        k=args.k,
        rows=args.rows,
        temperature=args.temperature,
        top_p=args.top_p,
        model=args.model,
        repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(result))
    else:
        from picospec.lab.bench.codec import render

        print(render(result))
    return 0


def _cmd_bench_models(args: argparse.Namespace) -> int:
    from picospec.lab.bench.models import render, run

    if bool(args.drafter) != bool(args.target):
        raise ConfigError("--drafter and --target go together")
    result = run(
        args.pair,
        gamma=args.gamma,
        max_new_tokens=args.max_tokens,
        seeds=args.seeds,
        k=args.k,
        threads=args.threads,
        drafter=args.drafter,
        target=args.target,
    )
    print(json.dumps(result) if args.json else render(result))
    return 0


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated numbers, got {text!r}") from None


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated integers, got {text!r}") from None


def _cmd_bench_e2e(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from picospec.lab.bench import e2e, report

    plan = e2e.QUICK if args.quick else e2e.Plan()
    changes: dict[str, object] = {}
    for name, parse in (
        ("rtts", _floats),
        ("rates", _floats),
        ("gammas", _ints),
        ("depths", _ints),
    ):
        value = getattr(args, name)
        if value is not None:
            changes[name] = parse(value, f"--{name[:-1]}")
    if args.schemes is not None:
        changes["schemes"] = tuple(args.schemes.split(","))
    for name in ("base_rtt", "base_rate", "repeats", "max_tokens", "temperature"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.prompts is not None:
        changes["prompts_per_style"] = args.prompts
    if args.exactness is not None:
        changes["exactness_n"] = args.exactness
    plan = replace(plan, **changes)  # type: ignore[arg-type]
    result = e2e.run(plan, args.pair)
    md = report.write(result, args.out)
    print(md.read_text())
    print(f"wrote {md}, {md.parent / 'e2e.json'} and {md.parent / 'plots'}/")
    if result["violations"]:
        print(
            f"picospec: {len(result['violations'])} contract violation(s), see {md}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from picospec.lab.bench import report

    result = report.load(args.results)
    md = report.write(result, args.out)
    print(f"wrote {md}")
    return 0


def _cmd_bench_gpu(args: argparse.Namespace) -> int:
    from picospec.lab.bench.gpu import render, run

    result = run(
        tiny=args.tiny,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        prompt_len=args.prompt_len,
        repeats=args.repeats,
        out=args.out,
    )
    print(json.dumps(result) if args.json else render(result))
    return 0


def _cmd_bench_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from picospec.lab.bench import serve

    plan = serve.QUICK if args.quick else serve.Plan()
    overrides = {"edges": serve.parse_edges(args.edges) if args.edges else None,
                 "modes": serve.parse_modes(args.modes) if args.modes else None,
                 "max_tokens": args.max_tokens, "generations": args.generations,
                 "threads": args.threads}  # fmt: skip
    plan = dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    result = serve.run(plan, args.pair)
    if args.json:
        for line in serve.json_lines(result):
            print(json.dumps(line))
    else:
        print(serve.render(result))
    if args.out:
        out = Path(args.out)
        out.write_text(json.dumps(result, indent=1) + "\n")
        serve.plot(result, out.with_suffix(".png"))
    if result["violations"]:
        print(f"picospec: {'; '.join(result['violations'])}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench_abuse(args: argparse.Namespace) -> int:
    from pathlib import Path

    from picospec.lab.bench import abuse

    result = abuse.run(abuse.QUICK if args.quick else abuse.Plan(), args.pair)
    print(json.dumps(result) if args.json else abuse.render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if result["violations"]:
        print(f"picospec: tokens changed under {', '.join(result['violations'])}", file=sys.stderr)
        return 1
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from picospec.lab.sim_cli import run

    return run(args)


def _cmd_link(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from picospec.lab.link import LinkConfig, LinkRelay
    from picospec.runtime.netargs import host_port

    cfg = LinkConfig(
        delay_ms=args.delay_ms,
        jitter_ms=args.jitter_ms,
        rate_mbit=args.rate_mbit,
        loss=args.loss,
        burst_bytes=args.burst_bytes,
        queue_bytes=args.queue_bytes,
        seed=args.seed,
    )
    listen, upstream = host_port(args.listen), host_port(args.upstream)

    async def run() -> None:
        async with LinkRelay(listen=listen, upstream=upstream, up=cfg, down=cfg) as relay:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            rate = f"{cfg.rate_mbit:g} Mbit/s" if cfg.rate_mbit else "unlimited rate"
            print(
                f"picospec link: {relay.address[0]}:{relay.address[1]} -> "
                f"{upstream[0]}:{upstream[1]}, {cfg.delay_ms:g} ms each way "
                f"(RTT {2 * cfg.delay_ms:g} ms), jitter {cfg.jitter_ms:g} ms, {rate}, "
                f"loss {cfg.loss:g}",
                flush=True,
            )
            await stop.wait()
            for name, d in (("up", relay.up), ("down", relay.down)):
                print(
                    f"{name}: {d.packets} packets ({d.bytes} bytes), {d.delivered} delivered, "
                    f"{d.lost} lost, {d.queue_drops} queue drops",
                    flush=True,
                )

    asyncio.run(run())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from picospec.lab.demo import run

    return run(args.pair, args.max_tokens)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the lab's subcommands to the ``picospec`` command."""
    demo = sub.add_parser("demo", help="the main demo (no flags needed)")
    demo.add_argument("--pair", default="smollm2", help="model pair (smollm2 or gemma3)")
    demo.add_argument("--max-tokens", type=int, default=96, help="tokens per generation")
    demo.set_defaults(func=_cmd_demo)
    from picospec.lab.linkmodel import LinkConfig  # for its defaults; imports nothing heavy

    link = sub.add_parser("link", help="a user-space UDP link emulator (delay, rate, loss)")
    link.add_argument("--listen", required=True, help="HOST:PORT the edge connects to")
    link.add_argument("--upstream", required=True, help="HOST:PORT of the cloud")
    link.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay, each direction")
    link.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra delay, 0..J")
    link.add_argument("--rate-mbit", type=float, default=0.0, help="0 = unlimited")
    link.add_argument("--loss", type=float, default=0.0, help="drop probability per packet")
    link.add_argument(
        "--burst-bytes", type=int, default=LinkConfig.burst_bytes, help="token bucket size"
    )
    link.add_argument(
        "--queue-bytes", type=int, default=LinkConfig.queue_bytes, help="queue before tail drop"
    )
    link.add_argument("--seed", type=int, default=0, help="seed of the jitter and loss draws")
    link.set_defaults(func=_cmd_link)
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    codec = bench.add_parser("codec", help="sampling transform + top-K + encode, native vs numpy")
    codec.add_argument("--json", action="store_true", help="print one JSON object")
    codec.add_argument("--vocab", type=int, default=262_144, help="synthetic row width")
    codec.add_argument("--k", type=int, default=8, help="kept entries per position")
    codec.add_argument("--rows", type=int, default=32, help="rows to time")
    codec.add_argument("--repeats", type=int, default=5, help="timed passes over the rows")
    codec.add_argument("--temperature", type=float, default=0.8)
    codec.add_argument("--top-p", type=float, default=1.0)
    codec.add_argument(
        "--model",
        default="auto",
        help="GGUF whose logits to use; 'auto' = the cached Gemma 3 target if built, "
        "'synthetic' = synthetic rows",
    )
    codec.set_defaults(func=_cmd_bench_codec)

    bm = bench.add_parser("models", help="the real pair in process: costs, acceptance, bytes")
    bm.add_argument("--pair", default="smollm2", help="smollm2 (default) or gemma3")
    bm.add_argument("--drafter", help="any drafter GGUF (with --target, instead of --pair)")
    bm.add_argument("--target", help="any target GGUF sharing the drafter's vocabulary")
    bm.add_argument("--gamma", type=int, default=4, help="drafted tokens per round")
    bm.add_argument("--k", type=int, default=8, help="entries of a sparse q")
    bm.add_argument("--max-tokens", type=int, default=64, help="tokens per generation")
    bm.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    bm.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    bm.add_argument("--json", action="store_true", help="print one JSON object")
    bm.set_defaults(func=_cmd_bench_models)

    be = bench.add_parser(
        "e2e", help="the modes and schemes over QUIC and the link emulator: tables, plots, JSON"
    )
    be.add_argument("--pair", default="smollm2")
    be.add_argument("--quick", action="store_true", help="the ~3-minute smoke preset")
    be.add_argument("--out", default="results", help="directory for RESULTS.md, e2e.json, plots/")
    be.add_argument("--rtt", dest="rtts", help="round-trip times in ms, e.g. 0,20,50,100")
    be.add_argument("--rate", dest="rates", help="link rates in Mbit/s, e.g. 1,10,100")
    be.add_argument("--gamma", dest="gammas", help="gammas of the block-size sweep, e.g. 2,4,6,8")
    be.add_argument("--depth", dest="depths", help="depths of the depth sweep, e.g. 1,2,3,4")
    be.add_argument("--schemes", help="e.g. sparse-q,split,greedy")
    be.add_argument("--base-rtt", type=float, help="RTT of the scheme, gamma and depth sweeps")
    be.add_argument("--base-rate", type=float, help="rate of the scheme, gamma and depth sweeps")
    be.add_argument("--temperature", type=float, help="of the sampling schemes")
    be.add_argument("--repeats", type=int, help="repeats of every point")
    be.add_argument("--prompts", type=int, help="prompts per style (maths, code)")
    be.add_argument("--max-tokens", type=int, help="tokens per generation")
    be.add_argument("--exactness", type=int, help="generations per exactness row (0: skip)")
    be.set_defaults(func=_cmd_bench_e2e)

    ba = bench.add_parser(
        "abuse", help="a well-behaved edge's latency while misbehaving clients hit the server"
    )
    ba.add_argument("--pair", default="smollm2")
    ba.add_argument("--quick", action="store_true", help="fewer repeats and connections")
    ba.add_argument("--json", action="store_true")
    ba.add_argument("--out", help="also write the JSON result to this file")
    ba.set_defaults(func=_cmd_bench_abuse)

    bs = bench.add_parser(
        "serve", help="N edges against one verifier: batched against unbatched verification"
    )
    bs.add_argument("--pair", default="smollm2")
    bs.add_argument("--edges", help="concurrent edges to measure, e.g. 1,2,4,8,16 (the default)")
    bs.add_argument(
        "--modes",
        help="the edges' modes, e.g. pipeline,cloud-only (the default); also sync, cloud-led",
    )
    bs.add_argument("--max-tokens", type=int, help="tokens per generation (default 48)")
    bs.add_argument("--generations", type=int, help="generations per edge per point (default 2)")
    bs.add_argument("--threads", type=int, help="the verifier's llama.cpp threads (default 2)")
    bs.add_argument("--quick", action="store_true", help="1 and 4 edges, short generations")
    bs.add_argument(
        "--json", action="store_true", help="one JSON object per (mode, edges, scheduling)"
    )
    bs.add_argument("--out", help="also write the whole result (JSON) and a plot (.png) here")
    bs.set_defaults(func=_cmd_bench_serve)

    bp = bench.add_parser("report", help="rewrite RESULTS.md and the plots from an e2e.json")
    bp.add_argument("results", help="an e2e.json written by `picospec bench e2e`")
    bp.add_argument("--out", default="results", help="directory to write into")
    bp.set_defaults(func=_cmd_bench_report)

    bg = bench.add_parser(
        "gpu", help="a torch verifier's verify(gamma) and decode costs, as a cloud profile"
    )
    bg.add_argument(
        "--model", help="a GGUF or Hugging Face directory (default: random Llama-3-8B shape)"
    )
    bg.add_argument("--tiny", action="store_true", help="a tiny random model (runs on a CPU)")
    bg.add_argument("--device", help="cuda (default when present) or cpu")
    bg.add_argument("--dtype", help="bfloat16 (GPU default), float16 or float32 (CPU default)")
    bg.add_argument("--prompt-len", type=int, default=256)
    bg.add_argument("--repeats", type=int, default=10)
    bg.add_argument("--out", help="write the CloudProfile JSON here (for `picospec sim --cloud`)")
    bg.add_argument("--json", action="store_true")
    bg.set_defaults(func=_cmd_bench_gpu)

    from picospec.lab.sim_cli import register as register_sim

    register_sim(sub)
    sub.choices["sim"].set_defaults(func=_cmd_sim)
