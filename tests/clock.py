"""A clock the test moves by hand, for relay's own time: retry schedules, due times, leases.

relay takes its clock as an argument (`create_app(config, clock=...)`, the store, the worker),
so a test can check what relay decided in relay's time, exactly, instead of measuring gaps
between arrivals, which a loaded machine stretches and squeezes.
"""

from __future__ import annotations

from relay.app import DISPATCHER
from tests.conftest import Relay

START = 1_700_000_000.0  # a whole number of seconds: schedules add up exactly


class FakeClock:
    """Stands still until the test moves it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wake(relay: Relay, *targets: str) -> None:
    """Have the targets' workers look for due deliveries now, after the clock moved (else they
    look again within a second)."""
    app = relay.client.app
    assert app is not None
    app[DISPATCHER].notify(targets)
