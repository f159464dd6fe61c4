"""The store: trade schema, segment writer and reader, crash recovery, retention, journals."""
