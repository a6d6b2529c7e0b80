"""Event ingest, sans-I/O at its core, with a thin front-end file per transport.

Public: `intake` (parsed items to ledger entries and owed replies), `session`
(a client's standing), `replies` (every byte sent), `protocol` (NDJSON
parser), the front-ends `server` (TCP/TLS), `http` and `syslog`, and the
helpers `validate`, `redact` and `limits`. `tls` is the TLS handshake on the loop.
"""

__all__ = [
    "http",
    "intake",
    "limits",
    "protocol",
    "redact",
    "replies",
    "server",
    "session",
    "syslog",
    "validate",
]
