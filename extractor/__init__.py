"""Cut a time window for one symbol out of the store into raw JSON, Parquet and metadata."""
