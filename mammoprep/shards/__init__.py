"""WebDataset shards + Parquet manifests: the format (:mod:`.schema`), the plan
(:mod:`.plan`), writing (:mod:`.write`) and checking (:mod:`.verify`)."""
