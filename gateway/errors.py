"""The exception hierarchy: every error says who is at fault."""

from __future__ import annotations

import json


def _json_line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


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
    """A client sent something we refuse; carries what the reply and the ledger need.

    `code` and `detail` form the error reply. For a refused line, `length`,
    `digest` (BLAKE3 of the whole line) and `excerpt` (its first bytes) go into
    the `rejected` ledger entry. `fatal` means the connection closes after the reply.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        length: int | None = None,
        digest: bytes | None = None,
        excerpt: bytes | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.length = length
        self.digest = digest
        self.excerpt = excerpt
        self.fatal = fatal

    def reply(self) -> bytes:
        return _json_line({"ok": False, "error": self.code, "detail": self.detail})


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
