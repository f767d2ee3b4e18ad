"""Prometheus counters, in a registry per app so that several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "relay_inbound_requests",
            "Inbound requests by source and result (accepted, duplicate, or the HTTP status).",
            ["source", "result"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by target and result (delivered, retry, dead).",
            ["target", "result"],
            registry=self.registry,
        )
        self.purged = Counter(
            "relay_store_purged_events",
            "Events (with their deliveries) deleted by retention.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
