"""``picospec cloud ...``: run the verifier service, make development certificates."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
from pathlib import Path

from picospec.codec.errors import ConfigError
from picospec.runtime.netargs import host_port

from .limits import Limits

log = logging.getLogger("picospec.cloud")


def _serve(args: argparse.Namespace) -> int:
    from picospec.runtime.logs import configure

    configure("info")
    from picospec.runtime.models import prepare
    from picospec.runtime.quic import ServerTLS

    from . import config as config_file
    from .backends import open_backend
    from .metrics import CloudMetrics
    from .server import VerifierService
    from .timed import TimedBackend

    cfg = config_file.load(args.config) if args.config else config_file.CloudConfig()
    names = ("listen", "backend", "model", "pair", "device", "gpus", "cert", "key", "threads",
             "n_ctx", "max_sessions", "metrics", "drain_s", "batch",
             "prefix_cache")  # fmt: skip
    cfg = cfg.with_overrides(
        **{n: getattr(args, n) for n in names},
        idle_timeout_s=args.idle_timeout,
        limits=Limits.parse(args.limit, base=cfg.limits) if args.limit else None,
    )
    if not (cfg.cert and cfg.key):
        raise ConfigError("a TLS certificate and key are needed: --cert and --key (or [cloud])")
    token = args.token.encode() if args.token else cfg.token()
    if not cfg.model and cfg.backend != "llama":
        raise ConfigError(
            f"--backend {cfg.backend} needs --model (a path for that backend; or model in [cloud])"
        )
    model = cfg.model or str(prepare(cfg.pair, drafter=False)["target"])
    metrics = CloudMetrics()
    inner = open_backend(
        cfg.backend,
        model,
        n_ctx=cfg.n_ctx,
        threads=cfg.threads or None,
        max_sessions=cfg.max_sessions,
        device=cfg.device or None,
        batched=cfg.batch,
        prefix_cache=cfg.prefix_cache,
        gpus=cfg.gpus,
    )
    backend = TimedBackend(inner, limit=0, on_forward=metrics.observe_forward)
    service = VerifierService(
        backend,
        token=token,
        name=backend.name,
        limits=cfg.limits,
        max_batch=None if cfg.batch else 1,
    )
    log.info("event=backend name=%s batching=%s", backend.name, json.dumps(backend.batch_note))
    metrics.attach(service)
    host, port = host_port(cfg.listen)

    async def run() -> None:
        from aiohttp import web

        from .metrics import application

        server = await service.serve(
            host, port, ServerTLS(cfg.cert, cfg.key), idle_timeout=cfg.idle_timeout_s
        )
        runner = None
        if cfg.metrics:
            mhost, mport = host_port(cfg.metrics)
            runner = web.AppRunner(application(metrics), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, mhost, mport).start()
        where = f"{server.address[0]}:{server.address[1]}"
        extra = f", metrics on http://{cfg.metrics}" if cfg.metrics else ""
        print(f"picospec cloud: serving {backend.name} on {where}{extra}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("event=draining drain_s=%g generations=%d", cfg.drain_s, service.budget.open)
        ended = await service.drain(cfg.drain_s)
        await asyncio.sleep(0.2)  # the Byes reach their edges before the connections close
        await server.close()
        await service.close()
        if runner is not None:
            await runner.cleanup()
        log.info("event=stopped ended_with_bye=%d", ended)

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
    s = cloud.add_parser(
        "serve",
        help="serve a target model to edges over QUIC",
        description="Flags override the config file; unset flags keep its values (or the "
        "defaults shown).",
    )
    s.add_argument("--config", help="cloud.toml ([cloud] and [limits] sections)")
    s.add_argument("--listen", help="HOST:PORT to bind (default 127.0.0.1:4433)")
    s.add_argument("--metrics", help="HOST:PORT for GET /metrics (Prometheus), /health and /ready")
    s.add_argument(
        "--drain-s",
        type=float,
        help="on SIGTERM, seconds open generations may finish before a Bye (default 10)",
    )
    s.add_argument(
        "--backend",
        choices=("llama", "torch", "ort", "trtllm"),
        help="verifier backend: llama (llama.cpp, CPU; default), torch, ort (ONNX Runtime "
        "GenAI), trtllm (TensorRT-LLM; not verified in this project)",
    )
    s.add_argument("--model", help="target model for the backend (default: the --pair GGUF)")
    s.add_argument(
        "--device", help="torch: cuda or cpu (default: cuda if present); ort: cpu or cuda"
    )
    s.add_argument(
        "--gpus",
        type=int,
        help="GPUs one target spans: torch places its layers across them (a Hugging Face "
        "directory; needs accelerate), trtllm runs tensor parallel over them; default 1 "
        "(neither is verified on more than one GPU)",
    )
    s.add_argument("--pair", help="model pair whose target to serve (default smollm2)")
    s.add_argument("--cert", help="TLS certificate (PEM)")
    s.add_argument("--key", help="TLS private key (PEM)")
    s.add_argument(
        "--token",
        help="shared edge token (default: token_file, the systemd credential, $PICOSPEC_TOKEN)",
    )
    s.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the backend (llama: default half the cores, for a verifier "
        "that shares its machine with an edge; give a dedicated server all of them)",
    )
    s.add_argument("--n-ctx", type=int, help="context tokens per session (default 2048)")
    s.add_argument(
        "--max-sessions", type=int, help="generations the backend holds at once (default 16)"
    )
    s.add_argument(
        "--batch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch many sessions' forwards into one where the backend can (default on; "
        "--no-batch: one session per forward)",
    )
    s.add_argument(
        "--prefix-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reuse the KV of a prompt prefix another session evaluated (llama with --batch; "
        "default on)",
    )
    s.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="a service limit, repeatable: "
        + ", ".join(f"{f.name} ({f.default})" for f in dataclasses.fields(Limits)),
    )
    s.add_argument("--idle-timeout", type=float, help="seconds (default 60)")
    s.set_defaults(func=_serve)
    g = cloud.add_parser("gen-cert", help="make a self-signed certificate for development")
    g.add_argument("--out", default=".", help="directory for cert.pem and key.pem")
    g.add_argument("--host", default="localhost", help="name or IP the certificate is for")
    g.add_argument("--days", type=int, default=365)
    g.set_defaults(func=_gen_cert)
