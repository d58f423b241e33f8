"""The SQLite store: schema, the single writer, and the metric queries behind the panels."""
