"""The `audience` command line: a thin HTTP client of the gateway plus the local scripts."""
