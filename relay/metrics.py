"""Prometheus metrics, in a registry per app so that several apps can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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
        self.reloads = Counter(
            "relay_config_reloads",
            "Config reloads (SIGHUP) by result (success, failure).",
            ["result"],
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.last_reload_success = Gauge(
            "relay_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded: at start, or by the last successful reload.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
