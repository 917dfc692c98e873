"""``picospec edge generate``: generate through a cloud verifier (or alone)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from picospec.codec.errors import ConfigError
from picospec.codec.sampling import Sampling, SamplingParams
from picospec.codec.scheme import Mode
from picospec.runtime.llamacpp import default_threads
from picospec.runtime.netargs import auth_token, host_port

from .client import EdgeClient, GenerationError, GenerationResult
from .drafter import Drafter
from .plan import parse_mode
from .text import TextStream


async def run_generations(
    client: EdgeClient,
    prompt: list[int],
    sampling: Sampling,
    args: argparse.Namespace,
    stream: bool,
) -> list[GenerationResult]:
    out = []
    for r in range(args.repeat):
        text = TextStream(client.drafter.piece, client.drafter.is_end)

        def show(tokens: list[int], text: TextStream = text) -> None:
            sys.stdout.write(text.feed(tokens))
            sys.stdout.flush()

        try:
            res = await client.generate(
                prompt,
                sampling=sampling,
                seed=None if args.seed is None else args.seed + r,
                max_new_tokens=args.max_tokens,
                mode=args.mode,
                gamma=args.gamma,
                depth=args.depth,
                early_send=args.early_send,
                on_tokens=show if stream else None,
                reply_timeout=args.reply_timeout,
            )
        finally:
            if stream:
                sys.stdout.write(text.flush())
        out.append(res)
    return out


def _generate(args: argparse.Namespace) -> int:
    from picospec.runtime.models import prepare
    from picospec.runtime.quic import ClientTLS

    mode = parse_mode(args.mode)
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.min_p)
    sampling = Sampling.of(params, args.scheme, args.k, allow_inexact=args.allow_inexact)
    if mode is not Mode.EDGE_ONLY and not args.cloud:
        raise ConfigError(f"--cloud HOST:PORT is needed for mode {args.mode}")
    path = args.drafter or str(prepare(args.pair)["drafter"])
    drafter = Drafter.open(path, n_ctx=args.n_ctx, threads=args.threads, gpu_layers=args.gpu_layers)
    w = drafter.ctx.weights
    prompt = w.tokenize(w.chat_prompt(args.prompt) if args.chat else args.prompt)

    async def run() -> list[GenerationResult]:
        client = EdgeClient(drafter)
        try:
            if mode is not Mode.EDGE_ONLY:
                host, port = host_port(args.cloud)
                tls = ClientTLS(cafile=args.ca, pin_sha256=args.pin, server_name=args.server_name)
                await client.connect(host, port, tls, token=auth_token(args.token))
            return await run_generations(client, prompt, sampling, args, stream=not args.json)
        finally:
            await client.close()

    try:
        results = asyncio.run(run())
    except GenerationError as e:
        res = e.result
        if args.json:
            print(json.dumps(res.to_dict()))
        print(
            f"\npicospec: the generation failed after {res.n_tokens} committed tokens: {e}",
            file=sys.stderr,
        )
        return 1
    for res in results:
        if args.json:
            print(json.dumps(res.to_dict()))
        else:
            print(
                f"\n[{res.mode}/{res.scheme}] {res.n_tokens} tokens, {res.tok_per_s:.1f} tok/s, "
                f"accept len {res.mean_accept_len:.2f}, seed {res.seed}, {res.finished}"
                + (f"\n[{res.plan}]" if res.plan else "")
            )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from picospec.runtime.logs import configure

    from . import config as config_file
    from .serve import run

    configure(args.log_level)
    cfg = config_file.load(args.config) if args.config else config_file.EdgeConfig()
    names = ("cloud", "ca", "pin", "server_name", "pair", "drafter", "threads", "n_ctx",
             "gpu_layers", "mode", "fallback", "queue_size", "name", "listen", "unix_socket",
             "api_key_file")  # fmt: skip
    cfg = cfg.with_overrides(**{n: getattr(args, n) for n in names})
    token = args.token.encode() if args.token else None
    if cfg.cloud and token is None:
        cfg.token()  # refuse a missing token before the drafter is loaded
    asyncio.run(run(cfg, token=token))
    return 0


def _connection_flags(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The flags edge generate and edge serve share (serve: None means "from the file")."""
    p.add_argument("--cloud", help="verifier HOST:PORT")
    p.add_argument("--ca", help="CA certificate that signed the cloud's certificate")
    p.add_argument("--pin", help="SHA-256 fingerprint of the cloud's certificate")
    p.add_argument("--server-name", default="localhost" if defaults else None,
                   help="name in the certificate")  # fmt: skip
    p.add_argument("--token", help="shared edge token (default: $PICOSPEC_TOKEN)")
    p.add_argument("--pair", default="smollm2" if defaults else None,
                   help="model pair whose drafter to use")  # fmt: skip
    p.add_argument("--drafter", help="drafter GGUF (default: the --pair drafter)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"drafter threads (default: half the cores, here {default_threads()}, so that a "
        "verifier on the same machine gets the other half)",
    )
    p.add_argument("--n-ctx", type=int, default=2048 if defaults else None,
                   help="drafter context tokens")  # fmt: skip
    p.add_argument("--gpu-layers", type=int, default=0 if defaults else None,
                   help="drafter layers a GPU build of llama.cpp offloads (-1: all)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="the device side").add_subparsers(dest="edge", required=True)
    g = edge.add_parser("generate", help="generate text with a cloud verifier")
    g.add_argument("--prompt", required=True)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    g.add_argument("--mode", default="auto", help="auto, " + ", ".join(m.value for m in Mode))
    g.add_argument("--scheme", help="sparse-q, split, gumbel, greedy (default: by temperature)")
    g.add_argument(
        "--allow-inexact",
        action="store_true",
        help="split only: accept corrections from a p truncated to its top k",
    )
    g.add_argument(
        "--gamma", type=int, default=4, help="drafted tokens per block (at most the cloud's limit)"
    )
    g.add_argument(
        "--depth",
        type=int,
        default=3,
        help="blocks in flight (at most the cloud's limit)",
    )
    g.add_argument("--k", type=int, default=8, help="entries of a sparse q")
    g.add_argument("--early-send", action="store_true", help="latency-aware early send")
    g.add_argument("--repeat", type=int, default=1, help="generations, seeds S..S+R-1")
    g.add_argument("--json", action="store_true", help="one JSON object per generation")
    g.add_argument(
        "--reply-timeout", type=float, default=30.0, help="longest wait for the cloud, seconds"
    )
    _connection_flags(g, defaults=True)
    g.set_defaults(func=_generate)

    v = edge.add_parser(
        "serve",
        help="the local OpenAI-compatible HTTP service (for systemd: Type=notify)",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /health and "
        "/metrics over the drafter and the cloud. Flags override the config file.",
    )
    v.add_argument("--config", help="edge.toml ([edge] and [serve] sections)")
    _connection_flags(v, defaults=False)
    v.add_argument("--listen", help="HOST:PORT of the HTTP service (default 127.0.0.1:8080)")
    v.add_argument("--unix-socket", help="listen on this unix socket instead")
    v.add_argument("--api-key-file", help="require the bearer key in this file")
    v.add_argument("--mode", help="default mode: auto, " + ", ".join(m.value for m in Mode))
    v.add_argument("--fallback", help="default fallback: local, wait or fail")
    v.add_argument("--queue-size", type=int, help="requests that may wait for the drafter")
    v.add_argument("--name", help="how this edge introduces itself to the cloud")
    v.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    v.set_defaults(func=_serve)
