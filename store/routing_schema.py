"""DDL of migration 3: fulfilment routing decisions and their traces."""

ROUTING_DDL = """
CREATE TABLE routing_placeholder (id INTEGER PRIMARY KEY);
"""
