"""Files and external systems: the warehouse, the raw landing zone, Great Expectations, queries, the run report."""
