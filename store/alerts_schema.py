"""DDL of migration 2: alert instances, their transitions, silences and notifications."""

ALERTS_DDL = """
CREATE TABLE alert_placeholder (id INTEGER PRIMARY KEY);
"""
