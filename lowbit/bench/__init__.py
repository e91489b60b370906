"""Benchmarks shipped with the package (`lowbit bench ...`): timing helpers, the end-to-end
decode benchmark. Imported only by the CLI and benchmark scripts, never by ``import lowbit``."""
