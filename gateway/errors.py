"""The exception hierarchy: every error says who is at fault."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is refused; names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


class RemoteInputError(GatewayError):
    """A client sent something we refuse. Carries the error code and detail for the reply."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class LedgerError(GatewayError):
    """The ledger cannot be used as asked (locked, missing, not writable)."""


class LedgerCorruption(LedgerError):
    """Damage found in the ledger: where it is and what is wrong."""

    def __init__(self, file: str, offset: int, seq: int, reason: str) -> None:
        super().__init__(f"{file} offset {offset} (seq {seq}): {reason}")
        self.file = file
        self.offset = offset
        self.seq = seq
        self.reason = reason
