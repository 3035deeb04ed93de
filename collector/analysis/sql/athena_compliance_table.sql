-- Athena (Trino) table over the results `collector compliance` writes (collector/analysis/compliance.py):
-- one JSON line per post id X's batch compliance job reported, under {prefix}/_compliance/dt=YYYY-MM-DD/
-- (dt: the day the job completed). reason is X's word: deleted, bounced, protected, suspended, scrub_geo.
-- ${database}, ${compliance_table}, ${bucket} and ${prefix} are filled in by the athena provisioning
-- step (which creates the same table through the Glue API) or by hand before pasting into the console.
-- The view posts_compliant (posts_compliant.sql) reads each id's latest result from here.
CREATE EXTERNAL TABLE IF NOT EXISTS ${database}.${compliance_table} (
  id string,
  action string,
  reason string,
  created_at string,
  redacted_at string,
  job_id string,
  checked_at string
)
PARTITIONED BY (dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'true')
LOCATION 's3://${bucket}/${prefix}/_compliance/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2020-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://${bucket}/${prefix}/_compliance/dt=${dt}/'
);
