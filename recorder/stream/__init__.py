"""The connection machinery: one runner for every exchange, each file one job."""
