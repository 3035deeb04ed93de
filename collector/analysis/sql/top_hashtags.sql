-- Top 20 hashtags (case-insensitive), of the full text: a long post's hashtags past the cut are
-- only in its note (note_tweet, spelled note_post since OpenAPI 2.167). Athena and DuckDB as is.
SELECT lower(tag) AS hashtag, count(*) AS posts
FROM posts
CROSS JOIN UNNEST(coalesce(data.note_tweet.entities.hashtags, data.note_post.entities.hashtags,
                           data.entities.hashtags)) AS t (tag)
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT 20
