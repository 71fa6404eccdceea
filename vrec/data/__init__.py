"""Data that vrec writes into the raw landing zone: the synthetic sample and the real-data adapters."""
