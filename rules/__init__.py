"""Operator rules: label matchers, alert thresholds and fulfilment routing."""
