"""Web console accounts: names, roles and scrypt password hashes in the state directory.

The file is `<state_dir>/web-users.json`, mode 0600, replaced atomically
(written beside, synced, renamed) under its own lock file, so that
`gateway user ...` works while the gateway runs and before its first start.
The running gateway reads it again whenever it changed (its mtime and size),
so an account added or removed takes effect at the next login.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError
from gateway.statedir import make_durable_dirs

USERS_FILE = "web-users.json"
USERS_LOCK = "web-users.lock"

ROLES = ("auditor", "operator", "admin")
# What each role may do; a role has every right of the roles before it.
RIGHTS = {
    "auditor": frozenset({"read", "export", "verify"}),
    "operator": frozenset({"read", "export", "verify", "print"}),
    "admin": frozenset({"read", "export", "verify", "print", "accounts"}),
}

# scrypt with N=2**14, r=8, p=1 needs 128 * N * r bytes = 16 MiB per hash: the
# "interactive login" parameters of the scrypt paper and RFC 7914, and small
# enough that two logins at once stay well inside a 1 GiB Pi. Measured: 0.13 s
# per hash on the development machine (a shared Xeon core); a Raspberry Pi 4
# (Cortex-A72 at 1.5 GHz) is about three to four times slower at this, so
# roughly 0.4-0.5 s, paid once per login and never on the event loop.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
# 32 MiB: twice what the parameters above need (OpenSSL's default cap is 32 MiB too).
SCRYPT_MAXMEM = 32 * 1024 * 1024
SALT_BYTES = 16  # 128 bits: RFC 7914's recommendation for a random salt
KEY_BYTES = 32

# A name is what a person types at a login form: 1 to 64 letters, digits, . _ -
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# 10 characters at least (NIST SP 800-63B asks 8; a box on a shared LAN gets more);
# 1,024 at most, so that a login form cannot make us hash megabytes.
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class AccountError(GatewayError):
    """An account command was refused (a bad name, role or password; no such account)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    salt: bytes
    key: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    created: str = ""  # UTC, "YYYY-MM-DD HH:MM:SS"; "" for accounts made before it was kept

    def may(self, right: str) -> bool:
        return right in RIGHTS[self.role]


def hash_password(password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> bytes:  # fmt: skip
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=KEY_BYTES
    )


def check_password(account: Account, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    key = hash_password(password, account.salt, account.n, account.r, account.p)
    return hmac.compare_digest(key, account.key)


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password is at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password is at most {MAX_PASSWORD} characters")


def new_account(name: str, role: str, password: str) -> Account:
    if not NAME_RE.match(name):
        raise AccountError("a name is 1 to 64 letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise AccountError(f"the role is one of {', '.join(ROLES)}")
    check_new_password(password)
    salt = os.urandom(SALT_BYTES)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return Account(name, role, salt, hash_password(password, salt), created=created)


def _encode(account: Account) -> dict:
    out = {
        "role": account.role,
        "scrypt": {"n": account.n, "r": account.r, "p": account.p},
        "salt": account.salt.hex(),
        "key": account.key.hex(),
    }
    if account.created:
        out["created"] = account.created
    return out


def _decode(name: str, data: dict) -> Account:
    params = data["scrypt"]
    return Account(
        name,
        data["role"],
        bytes.fromhex(data["salt"]),
        bytes.fromhex(data["key"]),
        int(params["n"]),
        int(params["r"]),
        int(params["p"]),
        str(data.get("created", "")),
    )


class AccountStore:
    """The accounts file of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / USERS_FILE
        self._seen: tuple[int, int] | None = None
        self._cache: dict[str, Account] = {}

    def load(self) -> dict[str, Account]:
        """Every account (read again only when the file changed)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._cache = None, {}
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._seen:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                accounts = {name: _decode(name, v) for name, v in data["accounts"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise AccountError(f"{self.path}: unreadable accounts file: {exc}") from None
            self._seen, self._cache = stamp, accounts
        return dict(self._cache)

    def get(self, name: str) -> Account | None:
        return self.load().get(name)

    def _save(self, accounts: dict[str, Account]) -> None:
        data = {"version": 1, "accounts": {n: _encode(a) for n, a in sorted(accounts.items())}}
        tmp = self.path.with_name(USERS_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(data, indent=1) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _locked(self):
        make_durable_dirs(self.state_dir)
        fd = os.open(self.state_dir / USERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _change(self, change) -> None:
        fd = self._locked()
        try:
            self._seen = None
            accounts = self.load()
            change(accounts)
            self._save(accounts)
            self._seen = None
        finally:
            os.close(fd)

    def add(self, account: Account) -> None:
        def change(accounts: dict[str, Account]) -> None:
            if account.name in accounts:
                raise AccountError(f"an account named {account.name!r} exists (user passwd)")
            accounts[account.name] = account

        self._change(change)

    def set_password(self, name: str, password: str) -> None:
        check_new_password(password)

        def change(accounts: dict[str, Account]) -> None:
            old = accounts.get(name)
            if old is None:
                raise AccountError(f"no account named {name!r}")
            fresh = new_account(name, old.role, password)
            accounts[name] = dataclasses.replace(fresh, created=old.created)

        self._change(change)

    def set_role(self, name: str, role: str, keep_admin: bool = False) -> None:
        """A new role (the account's sessions end). `keep_admin`: refuse to demote the
        last admin (the console's rule; on the box the command line may)."""
        if role not in ROLES:
            raise AccountError(f"the role is one of {', '.join(ROLES)}")

        def change(accounts: dict[str, Account]) -> None:
            old = accounts.get(name)
            if old is None:
                raise AccountError(f"no account named {name!r}")
            if keep_admin and role != "admin":
                _keep_an_admin(accounts, name, "demoted")
            accounts[name] = dataclasses.replace(old, role=role)

        self._change(change)

    def remove(self, name: str, keep_admin: bool = False) -> None:
        """`keep_admin`: refuse to remove the last admin (the console's rule)."""

        def change(accounts: dict[str, Account]) -> None:
            if name not in accounts:
                raise AccountError(f"no account named {name!r}")
            if keep_admin:
                _keep_an_admin(accounts, name, "removed")
            del accounts[name]

        self._change(change)


def _keep_an_admin(accounts: dict[str, Account], name: str, what: str) -> None:
    others = [a for a in accounts.values() if a.role == "admin" and a.name != name]
    if accounts[name].role == "admin" and not others:
        raise AccountError(f"{name!r} is the last admin and cannot be {what}")
