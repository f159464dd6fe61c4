"""The connection machinery: one runner for every exchange, each file one job.

`runner.StreamRunner` records one stream over `connection.Connection`s; see docs/runner.md for
the file-by-file layout. Nothing here names an exchange: every difference is in the `Adapter`.
"""
