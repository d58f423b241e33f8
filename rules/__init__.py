"""Operator rules: label matchers, alert thresholds and fulfillment routing."""
