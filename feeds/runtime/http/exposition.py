"""Prometheus text exposition of ``serve``'s counters, latency histogram and gauges.

Counter names end in ``_total`` (``omniops_events_total{feed,outcome}``,
``omniops_webhook_requests_total{source,status}``,
``omniops_webhook_rejected_total{source,reason}``,
``omniops_webhook_ignored_total{source}``); the histogram is
``omniops_webhook_durable_seconds{source}``; gauges are passed in by the handler at
scrape time (the notification receivers' as :func:`notification_gauges`:
``omniops_notifications_pending{receiver}`` and the others below).  Label values are
escaped as the text format requires.  The renderer is small and dependency-free, so the
metric names stay exactly what dashboards already use.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from itertools import accumulate

from store.alerts import ReceiverStatus

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request-to-durable latency histogram."""


class Metrics:
    """Counters and one histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self.help: dict[str, str] = {
            "omniops_events_total": "Items committed to the store, by feed and outcome.",
            "omniops_webhook_requests_total": "Webhook and /events requests, by source and status.",
            "omniops_webhook_rejected_total": "Requests refused before anything was stored.",
            "omniops_webhook_ignored_total": "Payload parts that carry no canonical fact.",
        }
        self._hits: dict[str, list[int]] = {}
        """Per source, latencies per bucket (past the last bound: the extra last slot)."""
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self._keys: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name{labels}``."""
        given = tuple(labels.items())
        key = self._keys.get(given)
        if key is None:  # each label set is sorted once (there are a few dozen at most)
            key = self._keys[given] = tuple(sorted(given))
        self.counters[name][key] += amount

    def get(self, name: str, **labels: str) -> float:
        """The current value of ``name{labels}`` (0 if never counted)."""
        return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def observe(self, source: str, seconds: float) -> None:
        """Record one request-to-durable latency."""
        hits = self._hits.get(source)
        if hits is None:
            hits = self._hits[source] = [0] * (len(LATENCY_BUCKETS) + 1)
        hits[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.latency_sum[source] += seconds
        self.latency_count[source] += 1

    @property
    def latency(self) -> dict[str, list[float]]:
        """Per source, the cumulative count of latencies at or under each bucket bound."""
        return {
            source: [float(n) for n in accumulate(hits[: len(LATENCY_BUCKETS)])]
            for source, hits in self._hits.items()
        }

    def render(self, gauges: Sequence[tuple[str, str, dict[str, str], float]] = ()) -> str:
        """The exposition text; ``gauges`` are ``(name, help, labels, value)``."""
        out: list[str] = []
        for name in sorted(self.counters):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            for labels, value in sorted(self.counters[name].items()):
                out.append(f"{name}{_labels(dict(labels))} {_num(value)}")
        name = "omniops_webhook_durable_seconds"
        out.append(f"# HELP {name} Time from request to the answer after the commit.")
        out.append(f"# TYPE {name} histogram")
        latency = self.latency
        for source in sorted(latency):
            for bound, count in zip(LATENCY_BUCKETS, latency[source], strict=True):
                out.append(
                    f"{name}_bucket{_labels({'source': source, 'le': str(bound)})} {_num(count)}"
                )
            total = self.latency_count[source]
            out.append(f"{name}_bucket{_labels({'source': source, 'le': '+Inf'})} {total}")
            out.append(f"{name}_sum{_labels({'source': source})} {self.latency_sum[source]:.6f}")
            out.append(f"{name}_count{_labels({'source': source})} {total}")
        seen: set[str] = set()
        for gname, ghelp, glabels, value in gauges:
            if gname not in seen:
                out.append(f"# HELP {gname} {ghelp}")
                out.append(f"# TYPE {gname} gauge")
                seen.add(gname)
            out.append(f"{gname}{_labels(glabels)} {_num(value)}")
        return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    """A label value escaped as the exposition format requires."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    number = float(value)
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    return str(int(number)) if number.is_integer() else repr(number)


NOTIFICATION_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "omniops_notifications_pending",
        "Notifications waiting in the store's outbox for the receiver (retried).",
        "pending",
    ),
    (
        "omniops_notifications_dead_letter",
        "Notifications given up on (refused, too old, too many attempts), kept in the outbox.",
        "dead_letter",
    ),
    (
        "omniops_notifications_failed_attempts",
        "Failed delivery attempts since the evaluating process started.",
        "failed_attempts",
    ),
    (
        "omniops_notifications_delivered",
        "Notifications delivered since the evaluating process started.",
        "delivered",
    ),
)
"""``(name, help, ReceiverStatus field)`` of the per-receiver notification gauges."""


def notification_gauges(
    statuses: Sequence[ReceiverStatus],
) -> list[tuple[str, str, dict[str, str], float]]:
    """The per-receiver notification gauges (``{receiver="..."}``) of ``statuses``."""
    return [
        (name, help_, {"receiver": s.receiver}, float(getattr(s, field)))
        for name, help_, field in NOTIFICATION_GAUGES
        for s in statuses
    ]
