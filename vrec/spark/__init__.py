"""Spark adapters: DataFrames in, DataFrames or staged files out; the per-row logic they run lives in vrec.core."""
