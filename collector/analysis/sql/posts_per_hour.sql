-- Posts per hour (UTC, by the post's created_at). Runs on Athena and on DuckDB as is.
-- On Athena, add e.g. WHERE dt BETWEEN '2026-11-01' AND '2026-11-07' to scan only those days.
SELECT substr(data.created_at, 1, 13) AS hour_utc, count(*) AS posts
FROM posts
GROUP BY 1
ORDER BY 1
