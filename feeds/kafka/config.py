"""Configuration of Kafka feeds (``[[serve.kafka]]``) and decisions out (``[serve.kafka_out]``).

Secrets never sit in the file: ``sasl_password_env`` names the environment variable that
holds the password, and the value is read when the client connects.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Format = Literal["canonical", "channel", "debezium"]


class KafkaSecurity(BaseModel):
    """How to reach a secured cluster: TLS and/or SASL (PLAIN, SCRAM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka's ``security.protocol``."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    """Name of the environment variable holding the SASL password (never the password)."""
    ca_file: Path | None = None
    """PEM bundle of the cluster's CA (default: the system's)."""
    cert_file: Path | None = None
    """Client certificate for mutual TLS."""
    key_file: Path | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients; raises ValueError on a missing secret."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(
                    str(self.cert_file), str(self.key_file) if self.key_file else None
                )
            options["ssl_context"] = context
        if self.protocol.startswith("SASL"):
            password = os.environ.get(self.sasl_password_env or "")
            if not self.sasl_username or not self.sasl_password_env or password is None:
                raise ValueError(
                    "kafka security: SASL needs sasl_username and sasl_password_env naming a"
                    f" set environment variable (got {self.sasl_password_env!r})"
                )
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=password,
            )
        return options


class KafkaSubscription(BaseModel):
    """One consumer group subscription (``[[serve.kafka]]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Feed name: where its health is kept (``kafka:<name>`` in ``/health``)."""
    bootstrap_servers: str = Field(min_length=1)
    """``host:port[,host:port]``."""
    topics: list[str] = Field(min_length=1)
    group_id: str = Field(min_length=1)
    format: Format = "canonical"
    channel_header: str = "channel"
    """``channel`` format: the header naming the payload's channel (shopify, square, ...)."""
    locations: list[str] = []
    """Scope: only events at these locations (empty: every location)."""
    regions: list[str] = []
    """Scope: only events at locations of these regions (empty: every region)."""
    security: KafkaSecurity = KafkaSecurity()
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=3_600_000)
    """How long the group waits for a silent member before giving its partitions away."""
    max_backoff_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest wait between reconnection attempts while the cluster is unreachable."""
    lag_every_seconds: float = Field(default=2.0, gt=0, le=3600)
    """How often the end offsets (lag) are read; also the liveness probe."""
    probe_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    """How long the lag probe waits for the cluster before the feed counts as ``retrying``."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without a committed offset starts."""
    stale_lag: int = Field(default=10_000, ge=1, le=10**15)
    """A total lag above this many records makes the feed count as stale: the sources it
    carries are then stale for the alerts (``stale_feed`` fires and inhibits as usual)."""
    stale_lag_seconds: float = Field(default=300.0, gt=0, le=31_536_000)
    """Lag that old also counts as stale: a partition with records left whose newest
    consumed record is older than this many seconds."""


class KafkaOut(BaseModel):
    """Decisions out (``[serve.kafka_out]``): routing decisions and alert notifications."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(min_length=1)
    decisions_topic: str | None = "omniops.decisions"
    """Routing decisions, keyed by order id (empty: not published)."""
    alerts_topic: str | None = "omniops.alerts"
    """Alert notifications, keyed by alert fingerprint (empty: not published)."""
    security: KafkaSecurity = KafkaSecurity()
    max_attempts: int = Field(default=0, ge=0, le=1_000_000)
    """Consecutive failed sends after which a batch is dropped (counted); 0: retry for as
    long as it takes, as the other receivers do."""
    poll_seconds: float = Field(default=1.0, gt=0, le=3600)
    """No effect (decisions are handed over by the writer as they are made); accepted so
    files that set it still load."""
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=3600)
    """Back-off before the first retry of a failed send (doubling each time)."""
    retry_max_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """Longest wait between retries."""
    send_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long one send waits for the cluster's acknowledgement before it counts as failed."""
    max_pending: int = Field(default=100_000, ge=1, le=100_000_000)
    """Most undelivered decisions kept (one per order; the oldest are dropped, counted)."""
