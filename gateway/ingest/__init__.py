"""Event ingest: the sans-I/O protocol, validation, and the TCP server on the loop."""
