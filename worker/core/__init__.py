"""The pure core: decides from facts and `now`; no I/O, no clock, no library adapters."""
