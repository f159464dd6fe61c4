"""Cut a time window for one symbol out of the store into raw JSON, Parquet and metadata."""

from pumpwatch.extractor.extract import extract, listing_dir_name

__all__ = ["extract", "listing_dir_name"]
