"""``picospec cloud ...``: run the verifier service, make development certificates."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
from pathlib import Path

from picospec.codec.errors import ConfigError
from picospec.runtime.netargs import auth_token, host_port

from .limits import Limits


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic's per-packet chatter
    from picospec.runtime.models import prepare
    from picospec.runtime.quic import ServerTLS

    from .backends import open_backend
    from .server import VerifierService

    if args.model is None and args.backend != "llama":
        raise ConfigError(f"--backend {args.backend} needs --model (a path for that backend)")
    model = args.model or str(prepare(args.pair, drafter=False)["target"])
    backend = open_backend(
        args.backend,
        model,
        n_ctx=args.n_ctx,
        threads=args.threads,
        max_sessions=args.max_sessions,
        device=args.device,
    )
    limits = Limits.parse(args.limit or [])
    service = VerifierService(
        backend, token=auth_token(args.token), name=backend.name, limits=limits
    )
    host, port = host_port(args.listen)

    async def run() -> None:
        server = await service.serve(
            host, port, ServerTLS(args.cert, args.key), idle_timeout=args.idle_timeout
        )
        print(
            f"picospec cloud: serving {backend.name} on {server.address[0]}:{server.address[1]}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()
        await service.close()

    asyncio.run(run())
    return 0


def _gen_cert(args: argparse.Namespace) -> int:
    from picospec.runtime.quic import generate_self_signed

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cert, key = out / "cert.pem", out / "key.pem"
    fingerprint = generate_self_signed(cert, key, host=args.host, days=args.days)
    print(f"certificate: {cert}\nkey:         {key}\nsha256:      {fingerprint}")
    print(f"edges verify it with --ca {cert} or --pin {fingerprint}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    cloud = sub.add_parser("cloud", help="the verifier side").add_subparsers(
        dest="cloud", required=True
    )
    s = cloud.add_parser("serve", help="serve a target model to edges over QUIC")
    s.add_argument("--listen", default="127.0.0.1:4433", help="HOST:PORT to bind")
    s.add_argument(
        "--backend",
        default="llama",
        choices=("llama", "torch", "ort", "trtllm"),
        help="verifier backend: llama (llama.cpp, CPU; default), torch, ort (ONNX Runtime "
        "GenAI), trtllm (TensorRT-LLM; not verified in this project)",
    )
    s.add_argument("--model", help="target model for the backend (default: the --pair GGUF)")
    s.add_argument(
        "--device", help="torch: cuda or cpu (default: cuda if present); ort: cpu or cuda"
    )
    s.add_argument("--pair", default="smollm2", help="model pair whose target to serve")
    s.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    s.add_argument("--key", required=True, help="TLS private key (PEM)")
    s.add_argument("--token", help="shared edge token (default: $PICOSPEC_TOKEN)")
    s.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the backend (llama: default half the cores, for a verifier "
        "that shares its machine with an edge; give a dedicated server all of them)",
    )
    s.add_argument("--n-ctx", type=int, default=2048, help="context tokens per session")
    s.add_argument(
        "--max-sessions", type=int, default=16, help="generations the backend holds at once"
    )
    s.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="a service limit, repeatable: "
        + ", ".join(f"{f.name} ({f.default})" for f in dataclasses.fields(Limits)),
    )
    s.add_argument("--idle-timeout", type=float, default=60.0, help="seconds")
    s.set_defaults(func=_serve)
    g = cloud.add_parser("gen-cert", help="make a self-signed certificate for development")
    g.add_argument("--out", default=".", help="directory for cert.pem and key.pem")
    g.add_argument("--host", default="localhost", help="name or IP the certificate is for")
    g.add_argument("--days", type=int, default=365)
    g.set_defaults(func=_gen_cert)
