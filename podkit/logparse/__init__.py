"""Log line parsers shared by the programs that read an app's own log format:
logformat (`--format`) and the metrics adapter's log source (`format:`).

`parsers` holds the formats (registered by name, chosen with a --format
spec, chains `a,b,c`), `timeparse` the timestamp conversion (`Clock`),
`schema` the output record's field rules.
"""
