"""The exception hierarchy: every error says who is at fault, and carries data, not bytes.

Every exception the gateway raises on purpose derives from GatewayError. An
error from remote input carries a code and a detail (and the refused line's
evidence); the reply encoder (gateway/ingest/replies.py) alone turns them into
wire bytes.
"""

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
    """A client sent something we refuse; carries what the reply and the ledger need.

    `code` and `detail` are what the reply says. For a refused line, `length`,
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


class LedgerError(GatewayError):
    """The ledger cannot be used as asked (locked, missing, not writable)."""


class StorageError(GatewayError):
    """Retention or an archive store cannot do its work now (logged, shown, retried)."""


class LedgerDamaged(LedgerError):
    """Acknowledged entries are gone or damaged: nothing is appended until the loss
    is accepted (`gateway accept-loss`)."""


class LedgerCorruption(LedgerError):
    """Damage found in the ledger: where it is and what is wrong."""

    def __init__(self, file: str, offset: int, seq: int, reason: str) -> None:
        super().__init__(f"{file} offset {offset} (seq {seq}): {reason}")
        self.file = file
        self.offset = offset
        self.seq = seq
        self.reason = reason
