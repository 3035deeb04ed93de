"""The spool: the data path on disk, one folder per state (Maildir-style).

A line moves `open/` -> `sealed/` -> `ready/` (compressed) -> deleted once S3 confirms, each step
an atomic rename, so a crash at any instant leaves every line in exactly one known state.
`layout` names the folders and the object keys, `writer` routes lines and rotates the open file,
`compress` seals and compresses, `stages` runs a folder's files through a chain of workers.
"""
