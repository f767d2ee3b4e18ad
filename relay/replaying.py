"""Which dead deliveries a replay means: by id, or every dead one a filter matches, a page
at a time, so that a replay beside a running daemon never holds the store's write lock long.
`relay deliveries replay` and the admin API replay through here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from relay.store.base import DeliveryFilter, DeliveryRecord, Store

REPLAY_PAGE = 500  # dead deliveries made pending per transaction


async def dead_pages(
    store: Store, where: DeliveryFilter, ids: Sequence[int], skipped: list[str]
) -> AsyncIterator[list[DeliveryRecord]]:
    """The dead deliveries to replay, newest first; each id that is missing or not dead is
    noted in `skipped` (and left as it is)."""
    if ids:
        yield await _dead_of_ids(store, ids, skipped)
        return
    before_id = None
    while True:
        page = await store.deliveries("dead", REPLAY_PAGE, where=where, before_id=before_id)
        if page:
            yield page
        if len(page) < REPLAY_PAGE:
            return
        before_id = page[-1].id


async def _dead_of_ids(
    store: Store, ids: Sequence[int], skipped: list[str]
) -> list[DeliveryRecord]:
    where = DeliveryFilter(delivery_ids=frozenset(ids))
    records = {r.id: r for r in await store.deliveries(None, len(ids), where=where)}
    for delivery_id in dict.fromkeys(ids):
        record = records.get(delivery_id)
        if record is None:
            skipped.append(f"no delivery {delivery_id}")
        elif record.state != "dead":
            skipped.append(f"delivery {delivery_id} is {record.state}, not dead: left as it is")
    return [record for record in records.values() if record.state == "dead"]
