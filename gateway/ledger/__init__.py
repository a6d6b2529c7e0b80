"""The tamper-evident ledger.

Public: `commit` (the Ledger the gateway appends to: group commit and durable
heads for subscribers), `format` (pure framing and the chain hash), `store`
(segment files, recovery, readers), `verify`, `entries` (what each kind
holds), `archive` (the archive store interface) and `retention`. `durability`
(the sync thread) is used by `commit` only.
"""

__all__ = ["archive", "commit", "entries", "format", "retention", "store", "verify"]
