"""Analysis: what was collected, read back from S3 (needs DuckDB; not on the instance).

One module a concern:
    loader      a period's objects from S3 into a local cache, then one DuckDB `posts` table
    options     what report and export share: source, period, cache, connection, summary lines
    report      `collector report`: one self-contained HTML page about a period
    charts      the report's charts (matplotlib PNG): posts over time with gaps, top-N rankings
    gaps        the period's gaps ("not collecting" from connection events, "quiet") and repairs
    export      `collector export`: one row per post, Parquet or CSV
    compliance  `collector compliance`: X's batch compliance job over the archive's post ids
    purge       `collector purge`: rewrite raw objects without the posts X reports removed
    sql/        the Athena tables and the example queries, which run unchanged on DuckDB
"""
