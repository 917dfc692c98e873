"""The verifier's operations endpoints: ``/metrics`` (Prometheus), ``/health``, ``/ready``.

Counters are read from the service's own ``ServiceStats`` when Prometheus
scrapes (a custom collector: the hot path only adds integers), and every
backend forward is observed in a latency histogram labelled by its size (tokens
evaluated and sessions batched into it: 1, 2, ... 16, then "17+"), through
``TimedBackend``'s hook. HTTP is
aiohttp's, on its own port: ``/health`` is 200 while the process serves (a
liveness probe), ``/ready`` is 200 while it accepts work (503 while draining:
a readiness probe takes it out of a load balancer before it stops).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from picospec.codec.messages import ErrorCode

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .server import VerifierService

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def size_label(tokens: int) -> str:
    return str(tokens) if tokens <= 16 else "17+"


class CloudMetrics:
    """The verifier's Prometheus registry: ServiceStats and forward latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.forward = Histogram(
            "picospec_cloud_forward_seconds",
            "One backend forward, by tokens evaluated and sessions batched into it.",
            ["tokens", "sessions"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.service: VerifierService | None = None

    def observe_forward(self, tokens: int, seconds: float, sessions: int = 1) -> None:
        """TimedBackend's hook (called on the model thread)."""
        self.forward.labels(size_label(tokens), size_label(sessions)).observe(seconds)

    def attach(self, service: VerifierService) -> None:
        self.service = service
        self.registry.register(_StatsCollector(service))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _StatsCollector(Collector):
    def __init__(self, service: VerifierService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        st = s.stats
        yield _counter("connections", "Connections accepted.", st.connections_total)
        yield GaugeMetricFamily(
            "picospec_cloud_connections_open", "Connections open now.", value=st.connections_open
        )
        yield _counter("generations", "Generations asked for (Start messages).",
                       st.generations_total)  # fmt: skip
        yield GaugeMetricFamily(
            "picospec_cloud_generations_open", "Generations open now.", value=s.budget.open
        )
        refusals = CounterMetricFamily(
            "picospec_cloud_refusals", "Errors sent to edges, by code.", labels=["code"]
        )
        for code in ErrorCode:
            refusals.add_metric([code.name], st.refusals.get(code, 0))
        yield refusals
        yield _counter("drafted_tokens", "Drafted tokens received to verify.", st.drafted_tokens)
        yield _counter("accepted_tokens", "Drafted tokens accepted.", st.accepted_tokens)
        yield _counter("committed_tokens", "Tokens committed (accepted drafts and the "
                       "cloud's own tokens).", st.committed_tokens)  # fmt: skip
        yield _counter("prefix_reused_tokens", "Prompt tokens whose KV was reused from a "
                       "shared prefix instead of evaluated.", st.prefix_tokens)  # fmt: skip
        yield _counter("received_bytes", "Stream bytes received from edges.", st.bytes_in)
        yield _counter("sent_bytes", "Stream bytes sent to edges.", st.bytes_out)
        yield _counter("model_busy_seconds", "Wall time the model thread spent on work.",
                       st.busy_seconds)  # fmt: skip
        yield _counter("model_units", "Units of sessions' work run on the model thread.",
                       st.work_units)  # fmt: skip
        yield _counter("model_turns", "Turns of the model thread (each one batch of units).",
                       st.batches)  # fmt: skip
        yield _counter("batched_units", "Units of work that shared a batch with another "
                       "connection's.", st.batched_units)  # fmt: skip
        yield _counter("model_failures", "Exceptions in model work (each ended a generation).",
                       st.model_failures)  # fmt: skip
        yield GaugeMetricFamily(
            "picospec_cloud_queue_depth", "Connections with work waiting for the model thread.",
            value=s.queue_depth,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "picospec_cloud_ready", "1 while the service accepts work, 0 while it drains.",
            value=0 if s.draining else 1,
        )  # fmt: skip


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"picospec_cloud_{name}", doc, value=value)


def application(metrics: CloudMetrics) -> web.Application:
    """/metrics, /health and /ready over the attached service."""

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.text(), content_type="text/plain", charset="utf-8")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def ready(request: web.Request) -> web.Response:
        s = metrics.service
        ok = s is not None and not s.draining
        body = {"ready": ok, "model": s.name if s is not None else None,
                "draining": bool(s is not None and s.draining)}  # fmt: skip
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.add_routes(
        [web.get("/metrics", prometheus), web.get("/health", health), web.get("/ready", ready)]
    )
    return app
