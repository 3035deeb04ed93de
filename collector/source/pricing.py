"""X's prices and caps for pay-per-use, one definition each (https://docs.x.com/x-api/getting-started/pricing,
https://docs.x.com/x-api/fundamentals/post-cap).

No imports: the runtime (config, ledger, estimate) and the analysis (report, options), which
runs where the collector's runtime dependencies may be absent, both read these.
"""

USD_PER_POST = 0.005  # Posts: Read, per post returned, at the list price ([budget] usd_per_post)
USD_PER_COUNTS_REQUEST = 0.005  # Counts: Recent, per request
MONTHLY_CAP = 3_000_000  # post reads per billing cycle on pay-per-use: $15,000 at the list price
