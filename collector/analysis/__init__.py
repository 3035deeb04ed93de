"""Analysis: what was collected, read back from S3 (needs DuckDB; not on the instance).

`loader` brings a period's objects into a local cache and DuckDB, `report` renders the HTML page,
`export` writes one row per post; `sql/` holds the Athena table and the example queries, which
run unchanged on DuckDB.
"""
