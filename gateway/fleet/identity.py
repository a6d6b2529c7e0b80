"""The box's identity: its name and the Ed25519 key pair that signs its checkpoints.

The private key is a 32-byte Ed25519 seed in the state directory
(`box.ed25519`, mode 0600), made at first start; the public key is derived
from it. The signed-note key name is `print-gateway/<box>`; its key ID is
the C2SP one (the first four bytes of SHA-256 over the key name, a newline,
the signature type 0x01 and the public key). The fingerprint people compare is
the SHA-256 of the public key, in hex (the first 16 digits are the short form).
docs/fleet.md says how to back the key up and what replacing it means.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from gateway.errors import GatewayError
from gateway.statedir import load_or_create_key

__all__ = [
    "BOX_KEY_FILE",
    "BoxIdentity",
    "PublicIdentity",
    "box_name",
    "load_identity",
    "parse_vkey",
]

BOX_KEY_FILE = "box.ed25519"
# The verifier key (public, group-readable like the ledger): auditors without
# access to the private key check checkpoints with it.
BOX_PUBLIC_FILE = "box.ed25519.pub"
# C2SP signed-note: the signature type byte of Ed25519.
ED25519_TYPE = b"\x01"
KEY_NAME_PREFIX = "print-gateway/"
# Box names are object-key prefixes and signed-note key names: no spaces, no
# '+', nothing a URL or a shell would mangle; 63 characters as a DNS label.
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def box_name(configured: str) -> str:
    """The configured `name`, else the host name, as a bucket prefix: other characters
    become '-' (so "Branch 12" is "Branch-12")."""
    raw = (configured or socket.gethostname()).strip()
    name = re.sub(r"[^A-Za-z0-9._-]", "-", raw).strip("-.")[:63] or "box"
    if not _NAME_OK.fullmatch(name):
        name = "box-" + name
    return name[:63]


def valid_box_name(name: str) -> bool:
    return bool(_NAME_OK.fullmatch(name))


def key_id(key_name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(key_name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


@dataclass(frozen=True)
class PublicIdentity:
    """What anyone may know of a box: its name and public key."""

    box: str
    public_key: bytes

    @property
    def key_name(self) -> str:
        return KEY_NAME_PREFIX + self.box

    @property
    def key_id(self) -> bytes:
        return key_id(self.key_name, self.public_key)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()

    @property
    def vkey(self) -> str:
        """The C2SP verifier key: name+keyid+base64(type || public key)."""
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode()
        return f"{self.key_name}+{self.key_id.hex()}+{encoded}"

    @property
    def origin(self) -> str:
        """The checkpoint's origin line: the box's name and its key's short fingerprint."""
        return f"{self.key_name}/{self.fingerprint[:16]}"

    def as_json(self) -> dict[str, str]:
        return {
            "box": self.box,
            "public_key": base64.b64encode(self.public_key).decode(),
            "fingerprint": self.fingerprint,
            "vkey": self.vkey,
            "origin": self.origin,
        }


def parse_vkey(text: str) -> PublicIdentity:
    """A verifier key as `gateway identity` prints it; GatewayError when it is not one."""
    parts = text.strip().split("+", 2)  # base64 may itself hold "+"
    if len(parts) != 3 or not parts[0].startswith(KEY_NAME_PREFIX):
        raise GatewayError(f"{text!r} is not a print-gateway verifier key")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except ValueError:
        raise GatewayError(f"{text!r}: the key is not base64") from None
    if len(raw) != 33 or raw[:1] != ED25519_TYPE:
        raise GatewayError(f"{text!r}: not an Ed25519 key")
    identity = PublicIdentity(parts[0].removeprefix(KEY_NAME_PREFIX), raw[1:])
    if identity.key_id.hex() != parts[1].lower():
        raise GatewayError(f"{text!r}: the key ID does not match the key")
    return identity


@dataclass(frozen=True)
class BoxIdentity:
    public: PublicIdentity
    signing_key: nacl.signing.SigningKey

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:  # never print the key
        return f"BoxIdentity({self.public.box!r}, {self.public.fingerprint[:16]})"


def load_identity(state_dir: Path, configured_name: str) -> BoxIdentity:
    """The box's key pair, made (0600, synced) on first use."""
    seed = load_or_create_key(state_dir / BOX_KEY_FILE)
    key = nacl.signing.SigningKey(seed)
    identity = BoxIdentity(PublicIdentity(box_name(configured_name), bytes(key.verify_key)), key)
    public = state_dir / BOX_PUBLIC_FILE
    text = identity.public.vkey + "\n"
    try:
        current = public.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    if current != text:  # first start, or the box was renamed
        tmp = public.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o640)
        os.replace(tmp, public)
    return identity


def load_public(state_dir: Path) -> PublicIdentity:
    """The box's verifier key as the running gateway last wrote it (readable by auditors)."""
    path = state_dir / BOX_PUBLIC_FILE
    try:
        return parse_vkey(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GatewayError(
            f"no box key at {path}: the gateway makes it at its first start"
        ) from None
