-- The posts X's developer policy lets an analysis use: the table posts (athena_table.sql) without the
-- posts whose latest compliance result (posts_compliance, athena_compliance_table.sql; latest by
-- checked_at) is deleted, bounced, protected or suspended, and with data.geo blanked (null) for the
-- posts whose latest result is scrub_geo. Same columns as posts: every example query runs on it with
-- FROM posts_compliant. The athena provisioning step creates it (Glue, as a Presto view); in the
-- Athena console, run this file as it is in the table's database.
-- The CAST names every field of posts.data (tests/unit/test_athena_sql.py keeps them equal).
-- On DuckDB (loader.compliant_view) the one-field row arrays are lists of the field, as in
-- loader.athena_view, and ARRAY(T) is T[]; nothing else changes.
CREATE OR REPLACE VIEW posts_compliant AS
SELECT
  CAST(ROW(
    p.data.id, p.data.created_at, p.data.lang, p.data.author_id, p.data.text, p.data.entities,
    p.data.note_tweet, p.data.note_post, p.data.referenced_tweets, p.data.referenced_posts,
    p.data.edit_history_tweet_ids, p.data.edit_history_post_ids,
    CASE WHEN c.reason = 'scrub_geo' THEN NULL ELSE p.data.geo END
  ) AS ROW(
    id varchar, created_at varchar, lang varchar, author_id varchar, text varchar,
    entities ROW(hashtags ARRAY(ROW(tag varchar)), mentions ARRAY(ROW(username varchar))),
    note_tweet ROW(text varchar, entities ROW(hashtags ARRAY(ROW(tag varchar)), mentions ARRAY(ROW(username varchar)))),
    note_post ROW(text varchar, entities ROW(hashtags ARRAY(ROW(tag varchar)), mentions ARRAY(ROW(username varchar)))),
    referenced_tweets ARRAY(ROW(type varchar, id varchar)),
    referenced_posts ARRAY(ROW(type varchar, id varchar)),
    edit_history_tweet_ids ARRAY(varchar),
    edit_history_post_ids ARRAY(varchar),
    geo ROW(place_id varchar, coordinates ROW(type varchar, coordinates ARRAY(double)))
  )) AS data,
  p.matching_rules,
  p.dt,
  p.hour
FROM posts AS p
LEFT JOIN (
  SELECT id, max_by(reason, checked_at) AS reason
  FROM posts_compliance
  GROUP BY id
) AS c ON c.id = p.data.id
WHERE c.reason IS NULL OR c.reason NOT IN ('deleted', 'bounced', 'protected', 'suspended')
