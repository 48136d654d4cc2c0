"""The analytics lake: Parquet tables exported from what ingestion stored (docs/analytics.md)."""
