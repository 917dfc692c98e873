"""The ``picospec`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from picospec import __version__
from picospec.cloud import cli as cloud_cli
from picospec.codec.errors import ConfigError, PicospecError
from picospec.edge import cli as edge_cli


def _cmd_bench_codec(args: argparse.Namespace) -> int:
    from picospec.bench.codec import run

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
        from picospec.bench.codec import render

        print(render(result))
    return 0


def _cmd_bench_models(args: argparse.Namespace) -> int:
    from picospec.bench.models import render, run

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


def _cmd_bench_rtt(args: argparse.Namespace) -> int:
    from picospec.bench.rtt import render, run

    try:
        rtts = tuple(float(x) for x in args.rtt.split(","))
    except ValueError:
        raise ConfigError(f"--rtt takes comma-separated milliseconds, got {args.rtt!r}") from None
    result = run(args.pair, rtts, args.gamma, args.depth, args.max_tokens)
    print(json.dumps(result) if args.json else render(result))
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from picospec.models import prepare

    paths = prepare(args.pair, drafter=not args.target_only)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from picospec.models import PAIRS, listing

    rows = listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for pair in PAIRS.values():
        print(f"{pair.name}: {pair.description}")
        for row in rows:
            if row["pair"] == pair.name:
                size = row["size_bytes"]
                state = f"{size / 1e6:.0f} MB" if isinstance(size, int) else "not built"
                print(f"  {row['role']:8} {state:>10}  {row['path']}")
    return 0


def _cmd_link(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from picospec.link import LinkConfig, LinkRelay
    from picospec.netargs import host_port

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
    from picospec.demo import run

    return run(args.pair, args.max_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picospec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"picospec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main demo (no flags needed)")
    demo.add_argument("--pair", default="smollm2", help="model pair (smollm2 or gemma3)")
    demo.add_argument("--max-tokens", type=int, default=96, help="tokens per generation")
    demo.set_defaults(func=_cmd_demo)
    from picospec.linkmodel import LinkConfig  # for its defaults; imports nothing heavy

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
    edge_cli.register(sub)
    cloud_cli.register(sub)

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

    br = bench.add_parser("rtt", help="the four modes over QUIC at several RTTs vs the time model")
    br.add_argument("--pair", default="smollm2")
    br.add_argument("--rtt", default="0,20,50,100", help="round-trip times in ms")
    br.add_argument("--gamma", type=int, default=4)
    br.add_argument("--depth", type=int, default=3)
    br.add_argument("--max-tokens", type=int, default=96)
    br.add_argument("--json", action="store_true")
    br.set_defaults(func=_cmd_bench_rtt)

    models = sub.add_parser("models", help="model provisioning").add_subparsers(
        dest="models", required=True
    )
    prep = models.add_parser("prepare", help="build and verify a model pair in the cache")
    prep.add_argument("--pair", default="smollm2", help="smollm2 (default) or gemma3")
    prep.add_argument("--target-only", action="store_true", help="skip the Q2_K drafter")
    prep.set_defaults(func=_cmd_models_prepare)
    lst = models.add_parser("list", help="show the pairs and the cache")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_cmd_models_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PicospecError as e:
        print(f"picospec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
