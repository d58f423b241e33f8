"""The HTTP side of ``omniops serve``, by concern.

* :mod:`~feeds.runtime.http.handlers`: the endpoints (webhooks, ``/events``, ``/health``,
  ``/metrics``) and the application that mounts them with the routing API;
* :mod:`~feeds.runtime.http.auth`: webhook signatures and bearer tokens as configured,
  the optional read-endpoint token, and which secrets are unusable (empty, blank, short);
* :mod:`~feeds.runtime.http.exposition`: counters and the latency histogram in the
  Prometheus text format.

The process around them (writer, feeds, drop folder, signals, options) stays in
:mod:`feeds.runtime.serve`.
"""
