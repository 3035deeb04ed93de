"""The S3 sink: ready files up to S3, exactly once under a key that never repeats.

`codecs` is the list of compressions (name, suffix, content type, levels, reader, writer), `s3`
the conditional PUT and its errors, `shipper` the stage that uploads and deletes only after S3
confirmed.
"""
