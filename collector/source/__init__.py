"""The stream source: X's filtered stream in, complete lines out.

`stream` opens the filtered stream through tweepy, hands the spool one batch of complete lines per
network read and classifies X's refusals; `rules` reads and writes the stream's rules (X's rules
API, dry runs included). Nothing here touches the disk: what arrives goes to the spool writer.
"""
