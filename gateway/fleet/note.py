"""Signed checkpoints in the C2SP signed-note form (pure: text in, text out).

A checkpoint's text is three lines, as C2SP tlog-checkpoint has them:

    print-gateway/<box>/<first 16 hex digits of the key fingerprint>
    <entry count: the head seq>
    <the head's chain hash, base64>

followed by a blank line and one signature line, `— <key name> <base64(key ID
|| Ed25519 signature over the text)>`. The text includes its final newline.
Here the "root hash" is the ledger's chain hash at the head (BLAKE3,
docs/ledger-format.md): it commits to every entry before it, so "the chain
passes through the head" is the consistency proof (no Merkle tree).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from gateway.errors import GatewayError
from gateway.fleet.identity import BoxIdentity, PublicIdentity

__all__ = [
    "Checkpoint",
    "NoteError",
    "note_from_entry",
    "parse_note",
    "sign_checkpoint",
    "verify_note",
]

EM_DASH = "\u2014"
# C2SP asks verifiers to bound a note; ours carry one signature in ~200 bytes,
# and the spec's floor (16 signatures, post-quantum sized) fits in 100 kB.
MAX_NOTE_BYTES = 100_000
HASH_BYTES = 32


class NoteError(GatewayError):
    """A note that is malformed, or whose signature does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    seq: int
    hash: bytes
    text: str  # the signed text (three lines)
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (key name, key id, signature)

    def short(self) -> str:
        """The short form for paper: seq, 16 hash digits, the signature's first 8 hex digits."""
        sig = self.signatures[0][2].hex()[:8] if self.signatures else "unsigned"
        return f"checkpoint {self.seq}:{self.hash.hex()[:16]} sig {sig}"


def checkpoint_text(origin: str, seq: int, head_hash: bytes) -> str:
    return f"{origin}\n{seq}\n{base64.b64encode(head_hash).decode()}\n"


def sign_checkpoint(identity: BoxIdentity, seq: int, head_hash: bytes) -> str:
    """The signed note for head (seq, hash)."""
    public = identity.public
    text = checkpoint_text(public.origin, seq, head_hash)
    signature = identity.sign(text.encode())
    blob = base64.b64encode(public.key_id + signature).decode()
    return f"{text}\n{EM_DASH} {public.key_name} {blob}\n"


def note_from_entry(detail: dict) -> str:
    """The signed note a `signed_checkpoint` entry's detail records, as it was signed."""
    text = checkpoint_text(detail["origin"], detail["seq"], bytes.fromhex(detail["hash"]))
    return f"{text}\n{EM_DASH} {detail['key_name']} {detail['signature']}\n"


def parse_note(note: str | bytes) -> Checkpoint:
    """Split a note into its checkpoint and signatures (nothing verified yet)."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError(f"a note of {len(note)} bytes is over {MAX_NOTE_BYTES}")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8 text") from None
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError(f"a note over {MAX_NOTE_BYTES} bytes")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("control characters in the note")
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("no blank line before the signatures, or no final newline")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a size and a hash line")
    origin, size, encoded = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NoteError(f"the entry count {size!r} is not a decimal number")
    try:
        head_hash = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError("the head hash is not base64") from None
    if len(head_hash) != HASH_BYTES:
        raise NoteError(f"the head hash is {len(head_hash)} bytes, not {HASH_BYTES}")
    signatures = []
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise NoteError(f"not a signature line: {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (ValueError, binascii.Error):
            raise NoteError("a signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("a signature too short to carry a key ID")
        signatures.append((parts[1], blob[:4], blob[4:]))
    return Checkpoint(origin, int(size), head_hash, text, tuple(signatures))


def verify_note(note: str | bytes, key: PublicIdentity) -> Checkpoint:
    """The checkpoint, once the box key's signature verifies; NoteError otherwise.

    Signatures by other keys are ignored (C2SP); one by this key that does
    not verify rejects the note; so does a note this key did not sign.
    """
    checkpoint = parse_note(note)
    verifier = nacl.signing.VerifyKey(key.public_key)
    found = False
    for name, kid, signature in checkpoint.signatures:
        if name != key.key_name or kid != key.key_id:
            continue
        try:
            verifier.verify(checkpoint.text.encode(), signature)
        except nacl.exceptions.BadSignatureError:
            raise NoteError(f"the signature of {name} does not verify") from None
        found = True
    if not found:
        raise NoteError(f"not signed by {key.key_name} (key {key.key_id.hex()})")
    if checkpoint.origin != key.origin:
        raise NoteError(f"origin {checkpoint.origin!r} is not this key's ({key.origin!r})")
    return checkpoint
