"""`gateway user add|list|passwd|remove`: the web console's accounts from the command line.

The password comes from the terminal (asked twice), or, when standard input
is not a terminal, from its first two lines, which must be the same (the
confirmation a terminal would ask for).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TextIO

from gateway.web.accounts import ROLES, AccountError, AccountStore, new_account


def add_parser(sub, add_state_options) -> None:
    p = sub.add_parser("user", help="web console accounts (docs/web.md)")
    users = p.add_subparsers(dest="user_command", required=True)
    q = users.add_parser("add", help="create an account (asks for its password)")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=ROLES)
    add_state_options(q)
    q = users.add_parser("list", help="the accounts and their roles")
    add_state_options(q)
    q = users.add_parser("passwd", help="set an account's password")
    q.add_argument("name")
    add_state_options(q)
    q = users.add_parser("remove", help="delete an account (its sessions end)")
    q.add_argument("name")
    add_state_options(q)


def read_password(stdin: TextIO | None = None) -> str:
    """The new password, twice: from the terminal, else the first two lines of stdin."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("password: ")
        second = getpass.getpass("again: ")
    else:
        first = stdin.readline().rstrip("\r\n")
        second = stdin.readline().rstrip("\r\n")
    if first != second:
        raise AccountError("the two passwords differ")
    return first


def run(args: argparse.Namespace, state_dir: Path) -> int:
    """Exit 0 done, 1 refused (bad name, role, password; no such account)."""
    store = AccountStore(state_dir)
    try:
        if args.user_command == "list":
            accounts = store.load()
            if not accounts:
                print(f"no accounts in {state_dir}: gateway user add NAME --role ROLE")
            for name, account in sorted(accounts.items()):
                print(f"{name}\t{account.role}")
            return 0
        if args.user_command == "remove":
            store.remove(args.name)
            print(f"removed {args.name}")
            return 0
        password = read_password()
        if args.user_command == "add":
            store.add(new_account(args.name, args.role, password))
            print(f"added {args.name} ({args.role})")
        else:
            store.set_password(args.name, password)
            print(f"password of {args.name} changed")
        return 0
    except AccountError as exc:
        print(f"gateway user: {exc}", file=sys.stderr)
        return 1
