"""Ending the background tasks that relay's parts run beside the event loop's work (gauges,
retention, checkpoints, LISTEN): one way, so that each part's `stop` says only what is its own."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` (if any) and return once it has ended; its cancellation is not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
