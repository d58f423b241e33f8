"""DDL of migration 2: alert instances, their transitions, silences and receiver health.

* ``alerts``: one row per alert rule × scope (its *fingerprint*), holding the current
  state of its latest incident.  A new incident of the same rule and scope reuses the row
  (the history is in ``alert_transitions``).  ``labels`` is the JSON of every label the
  alert carries (``alertname``, ``severity``, the rule's labels and the scope's labels).
* ``alert_transitions``: every change, append-only: state changes made by the evaluator
  and acknowledgements made by operators, each with its time and the OS user.
* ``silences``: label matchers with an expiry; an expired or ended silence is kept.
* ``receiver_status``: per notification receiver, what the notifier of the writing process
  delivered, retried and still holds, so every console can show it.

Times are integer seconds since the Unix epoch, UTC.
"""

ALERTS_DDL = """
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    scope TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'nodata', 'resolved')),
    severity TEXT NOT NULL,
    op TEXT NOT NULL,
    threshold REAL NOT NULL,
    clear REAL NOT NULL,
    value REAL,
    description TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL,
    fired_at INTEGER,
    resolved_at INTEGER,
    updated_at INTEGER NOT NULL,
    no_data_since INTEGER,
    acked_by TEXT,
    acked_at INTEGER,
    ack_comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alerts_state ON alerts (state);
CREATE INDEX alerts_rule ON alerts (rule_id);
CREATE TABLE alert_transitions (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('state', 'ack', 'unack')),
    from_state TEXT,
    to_state TEXT NOT NULL,
    value REAL,
    by_user TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alert_transitions_fingerprint ON alert_transitions (fingerprint, at);
CREATE INDEX alert_transitions_rule ON alert_transitions (rule_id, at);
CREATE TABLE silences (
    id INTEGER PRIMARY KEY,
    matchers TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    expired_by TEXT,
    expired_at INTEGER
);
CREATE INDEX silences_ends ON silences (ends_at);
CREATE TABLE receiver_status (
    receiver TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at INTEGER,
    last_delivered_at INTEGER,
    updated_at INTEGER NOT NULL
);
"""
