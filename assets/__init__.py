"""The crawl2chat Dagster code location: thin wiring of `pipelines` and `training` calls."""
