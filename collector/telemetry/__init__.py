"""Telemetry: what the collector tells about itself.

`metrics` declares every counter and gauge once, `health` derives healthy/degraded/failing with
a reason, `status` writes status.json and reads it back for `collector status`, `cloudwatch`
publishes the declared metrics, `events` records connection events under `_events/`, `lograte`
keeps repeated warnings from flooding the log, `redact` keeps secrets out of every record.
"""
