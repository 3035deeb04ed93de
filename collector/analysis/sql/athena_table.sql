-- Athena (Trino) table over the collector's objects, read in place: JSON SerDe, and partition
-- projection on dt and hour so new partitions need no crawler and no MSCK REPAIR.
-- ${database}, ${table}, ${bucket} and ${prefix} are filled in by the athena provisioning step
-- (which creates the same table through the Glue API) or by hand before pasting into the console.
-- Arrays of one-field structs are deliberate: Trino's UNNEST expands them to a plain column,
-- which is what lets the example queries run unchanged on DuckDB (collector.analysis.loader.athena_view).
-- Athena reads .jsonl.gz and .jsonl.zst by their extension. Fields X renamed in OpenAPI 2.167
-- (note_tweet -> note_post, referenced_tweets -> referenced_posts, edit_history_tweet_ids ->
-- edit_history_post_ids) are columns under both names: a query takes coalesce(old, new).
-- data.geo is null unless the capture profile asks X for geo (tweet.fields=geo, the default "full").
-- Queries that must honour X's developer policy read the view posts_compliant (posts_compliant.sql).
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.${table} (
  data struct<
    id: string,
    created_at: string,
    lang: string,
    author_id: string,
    text: string,
    entities: struct<hashtags: array<struct<tag: string>>, mentions: array<struct<username: string>>>,
    note_tweet: struct<text: string, entities: struct<hashtags: array<struct<tag: string>>, mentions: array<struct<username: string>>>>,
    note_post: struct<text: string, entities: struct<hashtags: array<struct<tag: string>>, mentions: array<struct<username: string>>>>,
    referenced_tweets: array<struct<type: string, id: string>>,
    referenced_posts: array<struct<type: string, id: string>>,
    edit_history_tweet_ids: array<string>,
    edit_history_post_ids: array<string>,
    geo: struct<place_id: string, coordinates: struct<type: string, coordinates: array<double>>>
  >,
  matching_rules array<struct<tag: string>>
)
PARTITIONED BY (dt string, hour string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')
LOCATION 's3://${bucket}/${prefix}/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://${bucket}/${prefix}/dt=${dt}/hour=${hour}/'
);
