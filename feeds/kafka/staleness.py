"""A lagging Kafka feed counts as stale for the alerts it would distort.

Alerts are evaluated on the panels' snapshots, where a source (a channel, a system) is
stale when its newest event is too old (:func:`store.metrics.feed_freshness`); the
``stale_feed`` alert then fires and the inhibition rules mute what a stale source would
distort (``[[notify.inhibit]]``, e.g. that channel's AOV drop).  A Kafka feed far behind
its topics delivers old events, so its sources can look fresh while the store misses the
newest hour.  While a feed's lag is over its limits (``stale_lag``, ``stale_lag_seconds``,
see :meth:`feeds.kafka.consumer.KafkaFeed.assess_lag`), :func:`lagging_sources` marks the
sources it carries, and the feed itself, stale in the snapshots the alert loop evaluates,
so the same rules inhibit the same alerts as for any stale feed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from feeds.base import Feed
from feeds.kafka.consumer import KafkaFeed
from store.snapshots import FeedFreshness, Snapshots


def mark_stale(snapshots: Snapshots, feeds: Iterable[str]) -> Snapshots:
    """``snapshots`` with ``feeds`` flagged stale in the headline's freshness."""
    rows = {f.feed: f for f in snapshots.headline.feeds}
    for name in feeds:
        row = rows.get(name)
        rows[name] = (
            replace(row, stale=True)
            if row is not None
            else FeedFreshness(feed=name, last_event_at=None, events=0, quarantined=0, stale=True)
        )
    if not rows:
        return snapshots
    headline = replace(snapshots.headline, feeds=tuple(rows[k] for k in sorted(rows)))
    return replace(snapshots, headline=headline)


def lagging_sources(feeds: Iterable[Feed]) -> Callable[[Snapshots], Snapshots] | None:
    """The alert loop's ``adjust``: mark what lagging Kafka feeds carry stale (None: no Kafka)."""
    kafka = [f for f in feeds if isinstance(f, KafkaFeed)]
    if not kafka:
        return None

    def adjust(snapshots: Snapshots) -> Snapshots:
        stale = frozenset().union(*(f.stale_for_alerts for f in kafka))
        return mark_stale(snapshots, stale) if stale else snapshots

    return adjust
