"""Kafka: a consumer-group feed adapter, record formats, ``omniops kafka check``.

* :mod:`feeds.kafka.config`: ``[[serve.kafka]]`` subscriptions and ``[serve.kafka_out]``.
* :mod:`feeds.kafka.formats`: one Kafka record to canonical events (``canonical``,
  ``channel`` payloads relayed with their channel in a header, ``debezium`` envelopes).
* :mod:`feeds.kafka.consumer`: :class:`~feeds.kafka.consumer.KafkaFeed`, whose cursor is
  the group's committed offset, committed only once the store has the events.
* :mod:`feeds.kafka.check`: what ``serve`` would consume, without consuming.

This package imports nothing from :mod:`feeds.runtime.serve`, so the server can import it.
"""
