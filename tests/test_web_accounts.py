"""Web console accounts: the store, the hashes, and `gateway user`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.web.accounts import (
    AccountError,
    AccountStore,
    check_password,
    new_account,
)

PW = "correct horse battery"


def test_add_check_passwd_remove(tmp_path):
    state = tmp_path / "fresh" / "state"  # does not exist yet: created
    store = AccountStore(state)
    store.add(new_account("alice", "auditor", PW))
    account = AccountStore(state).get("alice")
    assert account is not None and account.role == "auditor"
    assert check_password(account, PW)
    assert not check_password(account, PW + "x")
    assert account.may("export") and not account.may("print")
    store.set_password("alice", "another long one")
    again = AccountStore(state).get("alice")
    assert again is not None and again.salt != account.salt
    assert check_password(again, "another long one") and not check_password(again, PW)
    store.remove("alice")
    assert AccountStore(state).load() == {}
    assert (state / "web-users.json").stat().st_mode & 0o777 == 0o600


def test_refusals(tmp_path):
    store = AccountStore(tmp_path)
    with pytest.raises(AccountError, match="at least"):
        new_account("bob", "admin", "short")
    with pytest.raises(AccountError, match="role"):
        new_account("bob", "root", PW)
    with pytest.raises(AccountError, match="name"):
        new_account("bob smith", "admin", PW)
    store.add(new_account("bob", "admin", PW))
    with pytest.raises(AccountError, match="exists"):
        store.add(new_account("bob", "operator", PW))
    with pytest.raises(AccountError, match="no account"):
        store.remove("carol")


def test_no_password_is_stored_in_clear(tmp_path):
    AccountStore(tmp_path).add(new_account("alice", "admin", PW))
    text = (tmp_path / "web-users.json").read_text()
    assert PW not in text
    assert json.loads(text)["accounts"]["alice"]["scrypt"] == {"n": 16384, "r": 8, "p": 1}


def _user(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "gateway", "user", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_before_first_start(tmp_path):
    state = tmp_path / "var"
    r = _user("add", "alice", "--role", "operator", "--state", str(state), stdin=f"{PW}\n{PW}\n")
    assert r.returncode == 0, r.stderr
    r = _user("list", "--state", str(state))
    assert r.stdout == "alice\toperator\n"
    r = _user("passwd", "alice", "--state", str(state), stdin=f"{PW}1\n{PW}2\n")
    assert r.returncode == 1 and "differ" in r.stderr
    r = _user("remove", "nobody", "--state", str(state))
    assert r.returncode == 1 and "no account" in r.stderr
    r = _user("remove", "alice", "--state", str(state))
    assert r.returncode == 0
    assert "no accounts" in _user("list", "--state", str(state)).stdout


def test_role_changes_and_the_last_admin(tmp_path):
    store = AccountStore(tmp_path)
    store.add(new_account("root", "admin", PW))
    store.add(new_account("ann", "auditor", PW))
    created = store.get("ann").created
    assert created and created[:2] == "20"
    store.set_role("ann", "operator", keep_admin=True)
    store.set_password("ann", "another long one")
    again = AccountStore(tmp_path).get("ann")
    assert again.role == "operator" and again.created == created
    with pytest.raises(AccountError, match="one of"):
        store.set_role("ann", "root")
    with pytest.raises(AccountError, match="last admin"):
        store.set_role("root", "auditor", keep_admin=True)
    with pytest.raises(AccountError, match="last admin"):
        store.remove("root", keep_admin=True)
    store.set_role("ann", "admin", keep_admin=True)
    store.remove("root", keep_admin=True)
    assert set(AccountStore(tmp_path).load()) == {"ann"}


def test_accounts_without_a_created_time_still_load(tmp_path):
    store = AccountStore(tmp_path)
    store.add(new_account("old", "auditor", PW))
    path = tmp_path / "web-users.json"
    data = json.loads(path.read_text())
    del data["accounts"]["old"]["created"]
    path.write_text(json.dumps(data))
    account = AccountStore(tmp_path).get("old")
    assert account is not None and account.created == "" and check_password(account, PW)
