"""The edge's metrics, in Prometheus terms (``prometheus-client``, a registry per edge).

Names follow Prometheus conventions: the ``picospec_edge_`` prefix, base units
in the name, counters ending in ``_total``, histograms for latencies. The
definitions sit next to the counters: "verified" tokens were checked by the
cloud's target; "local" tokens came from the drafter alone while the cloud was
unreachable (offline fallback) or in edge-only mode.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "picospec_edge_requests_total", "Generations requested, by outcome.", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "picospec_edge_tokens_total",
            "Tokens generated: kind=verified (checked by the cloud) or local (the drafter alone).",
            ["kind"],
            registry=r,
        )
        self.drafted = Counter(
            "picospec_edge_drafted_tokens_total", "Tokens drafted and sent to be verified.",
            registry=r,
        )  # fmt: skip
        self.accepted = Counter(
            "picospec_edge_accepted_tokens_total", "Drafted tokens the cloud accepted.", registry=r
        )
        self.fallback_seconds = Counter(
            "picospec_edge_fallback_seconds_total",
            "Time generations spent running locally because the cloud was unreachable.",
            registry=r,
        )
        self.draft_step = Histogram(
            "picospec_edge_draft_step_seconds",
            "Each generation's mean drafter step, as the edge loop waits for it.",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5), registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "picospec_edge_time_to_first_token_seconds", "From the request to the first token.",
            buckets=(0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10), registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "picospec_edge_queue_depth", "Requests waiting for the drafter.", registry=r
        )
        self.cloud_up = Gauge(
            "picospec_edge_cloud_connected", "1 while the cloud is connected, else 0.", registry=r
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
