"""``picospec edge generate``: generate through a cloud verifier (or alone)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from picospec.codec.errors import ConfigError
from picospec.codec.sampling import SamplingParams
from picospec.codec.scheme import Scheme
from picospec.netargs import auth_token, host_port

from .client import EdgeClient, GenerationResult
from .drafter import Drafter

MODES = ("pipeline", "sync", "edge-only", "cloud-only")


async def run_generations(
    client: EdgeClient, prompt: list[int], args: argparse.Namespace, stream: bool
) -> list[GenerationResult]:
    out = []
    for r in range(args.repeat):

        def show(tokens: list[int]) -> None:
            sys.stdout.write(client.text(tokens))
            sys.stdout.flush()

        res = await client.generate(
            prompt,
            seed=args.seed + r,
            max_new_tokens=args.max_tokens,
            mode=args.mode,
            gamma=args.gamma,
            depth=args.depth,
            early_send=args.early_send,
            on_tokens=show if stream else None,
        )
        out.append(res)
    return out


def _generate(args: argparse.Namespace) -> int:
    from picospec.models import prepare
    from picospec.quic import ClientTLS

    if args.mode not in MODES:
        raise ConfigError(f"unknown mode {args.mode!r}; choose one of {', '.join(MODES)}")
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.min_p)
    scheme = (
        Scheme.parse(args.scheme)
        if args.scheme
        else (Scheme.GREEDY if params.greedy else Scheme.SPARSE_Q)
    )
    path = args.drafter or str(prepare(args.pair)["drafter"])
    drafter = Drafter.open(path, params, scheme=scheme, k=args.k, threads=args.threads)
    w = drafter.ctx.weights
    prompt = w.tokenize(w.chat_prompt(args.prompt) if args.chat else args.prompt)

    async def run() -> list[GenerationResult]:
        client = EdgeClient(drafter)
        try:
            if args.mode != "edge-only":
                if not args.cloud:
                    raise ConfigError(f"--cloud HOST:PORT is needed for mode {args.mode}")
                host, port = host_port(args.cloud)
                tls = ClientTLS(cafile=args.ca, pin_sha256=args.pin, server_name=args.server_name)
                await client.connect(host, port, tls, token=auth_token(args.token))
            return await run_generations(client, prompt, args, stream=not args.json)
        finally:
            await client.close()

    results = asyncio.run(run())
    for res in results:
        if args.json:
            print(json.dumps(res.to_dict()))
        else:
            print(
                f"\n[{res.mode}/{res.scheme}] {res.n_tokens} tokens, {res.tok_per_s:.1f} tok/s, "
                f"accept len {res.mean_accept_len:.2f}, {res.finished}"
            )
    return 0 if all(not r.finished.startswith("connection lost") for r in results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="the device side").add_subparsers(dest="edge", required=True)
    g = edge.add_parser("generate", help="generate text with a cloud verifier")
    g.add_argument("--cloud", help="verifier HOST:PORT")
    g.add_argument("--prompt", required=True)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--mode", default="pipeline", help=", ".join(MODES))
    g.add_argument("--scheme", help="sparse-q, split, gumbel, greedy (default: by temperature)")
    g.add_argument("--gamma", type=int, default=4, help="drafted tokens per block")
    g.add_argument("--depth", type=int, default=3, help="blocks in flight (pipeline)")
    g.add_argument("--k", type=int, default=8, help="entries of a sparse q")
    g.add_argument("--early-send", action="store_true", help="latency-aware early send")
    g.add_argument("--repeat", type=int, default=1, help="generations, seeds S..S+R-1")
    g.add_argument("--json", action="store_true", help="one JSON object per generation")
    g.add_argument("--pair", default="smollm2", help="model pair whose drafter to use")
    g.add_argument("--drafter", help="drafter GGUF (default: the --pair drafter)")
    g.add_argument("--threads", type=int, default=None, help="llama.cpp threads")
    g.add_argument("--ca", help="CA certificate that signed the cloud's certificate")
    g.add_argument("--pin", help="SHA-256 fingerprint of the cloud's certificate")
    g.add_argument("--server-name", default="localhost", help="name in the certificate")
    g.add_argument("--token", help="shared edge token (default: $PICOSPEC_TOKEN)")
    g.set_defaults(func=_generate)
