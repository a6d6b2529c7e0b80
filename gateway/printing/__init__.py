"""Printing: the spool and its fold over the ledger, transports by URI, the emulator.

Public: `spool` (jobs per printer, retried until done), `fold` (what is owed,
derived from durable entries), `transports` and `uri` (the registry of
printer URI schemes), `reports` (the daily report's entries) and `emulator`
(a port 9100 printer for tests and demos).
"""

__all__ = ["emulator", "fold", "reports", "spool", "transports", "uri"]
