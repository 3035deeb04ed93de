-- Top 20 hashtags (case-insensitive). Runs on Athena and on DuckDB as is.
SELECT lower(tag) AS hashtag, count(*) AS posts
FROM posts
CROSS JOIN UNNEST(data.entities.hashtags) AS t (tag)
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT 20
