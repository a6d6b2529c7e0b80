"""The `gateway` command line: run, verify, export, send, status, printing commands."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from gateway import __version__, zone
from gateway.config import Config, load_config
from gateway.errors import ConfigError, GatewayError, LedgerCorruption, LedgerError
from gateway.render.languages import LANGUAGES

# Rows `gateway query` prints without --limit or --all: a screenful.
DEFAULT_LIMIT = 50

# Exit codes, the same in every command (README, "Exit codes"): 0 the answer
# is yes; 1 it is no (damage found, an anchor missed, events or a configuration
# refused, the state lock held by another gateway); 2 there is no answer (bad
# arguments, a missing directory or file, the gateway unreachable, permission
# denied).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CannotAnswer(GatewayError):
    """The command cannot run here as asked (exit 2): a path, a permission, a peer."""


def _add_state_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="configuration file (YAML)")
    group.add_argument(
        "--state", type=Path, help="state directory (default: ./var or $STATE_DIRECTORY)"
    )


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.state)


def _existing_state(args: argparse.Namespace) -> Config:
    """The configuration of a read-only command: its state directory must exist.

    (A fresh state directory with no ledger yet is an empty ledger; a missing
    one is almost always a mistyped path, and must not verify as "ok".)
    """
    config = _config(args)
    if not config.state_dir.is_dir():
        raise CannotAnswer(f"no state directory at {config.state_dir}")
    return config


def _add_zone_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="show times and days in this IANA zone instead of the gateway's (recorded in "
        "the ledger)",
    )


def _zone(args: argparse.Namespace, config: Config) -> tuple[dt.tzinfo, str, str]:
    """(zone, its name, how it was chosen): --tz, else the ledger's, else this machine's."""
    recorded = None
    if config.ledger_dir.is_dir():
        recorded = zone.recorded(config.ledger_dir, config.state_dir / "index.sqlite3")
    if getattr(args, "tz", None):
        if not zone.valid(args.tz):
            raise CannotAnswer(f"--tz {args.tz!r} is not an IANA time zone name")
        name = args.tz
        note = f"{name} (--tz; the gateway's zone is {recorded or 'not recorded'})"
    elif recorded:
        name, note = recorded, f"{recorded} (the gateway's zone, from the ledger)"
    else:
        name = config.zone_name
        note = f"{name} (no zone recorded in the ledger: the configuration's)"
    return zone.get(name), name, note


NO_CHECK_HELP = "do not check entries against the hash chain (faster; said in the output)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Compliance print gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway in the foreground")
    _add_state_options(p)

    p = sub.add_parser("check-config", help="validate a configuration file without starting")
    p.add_argument("file", type=Path, help="configuration file (YAML)")

    p = sub.add_parser(
        "accept-loss",
        help="with the gateway stopped: record the loss of damaged or missing acknowledged "
        "entries and give their seqs up for good, so that events are taken again",
    )
    _add_state_options(p)
    p.add_argument("--reason", default="", help="why (recorded in the loss entry)")
    p.add_argument(
        "--dry-run", action="store_true", help="say what would be recorded; change nothing"
    )

    p = sub.add_parser("verify", help="re-derive the ledger's hash chain")
    _add_state_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="verify the archived segments in DIR and the live ones as one chain",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="check live segments in at most N processes (default: one per CPU; "
        "1 is gentlest on a running gateway)",
    )
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="an anchor the chain must pass through (repeatable; the 16-digit hash on paper "
        "is enough)",
    )
    p.add_argument("--expect-file", type=Path, metavar="FILE", help="anchors, one a line")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="a signed checkpoint note: its signature must verify with the box key and the "
        "chain must pass through its head",
    )
    p.add_argument(
        "--key",
        metavar="VKEY",
        help="the box's verifier key for --checkpoint (default: the state directory's, "
        "box.ed25519.pub)",
    )
    p.add_argument(
        "--statement",
        type=Path,
        metavar="FILE",
        help="write a verification statement (HTML when FILE ends in .html, else text)",
    )
    _add_zone_option(p)

    p = sub.add_parser("identity", help="the box's name, public key and fingerprint")
    _add_state_options(p)
    p.add_argument("--json", action="store_true", help="print the identity as JSON")

    from gateway.fleet.command import add_fleet_parser

    add_fleet_parser(sub, _add_state_options)

    p = sub.add_parser("export", help="print ledger entries, each checked against the chain")
    _add_state_options(p)
    p.add_argument("--from-seq", type=int, default=1)
    p.add_argument("--to-seq", type=int)
    p.add_argument("--format", choices=["jsonl"], default="jsonl")
    p.add_argument("--no-check", action="store_true", help=NO_CHECK_HELP)

    p = sub.add_parser("send", help="send NDJSON events from a file or stdin")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50001)
    p.add_argument("--app", help="app name sent in the hello line")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--token", help="the app's token (visible to `ps`: prefer the next two)")
    secret.add_argument(
        "--token-file", type=Path, help="file holding the app's token (ingest.tokens)"
    )
    p.add_argument("--ack", action="store_true", help="wait for every acknowledgement")
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        help="with --ack: send unanswered lines and transient refusals again, this many "
        "times (default 3; safe because each line gets an event_id)",
    )
    p.add_argument(
        "--no-event-ids",
        action="store_true",
        help="with --ack: do not give lines without an event_id one (and do not retry)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout in seconds")
    p.add_argument("--tls", action="store_true", help="connect with TLS (ingest.tls.listen)")
    p.add_argument("--ca", help="with --tls: CA bundle to verify the gateway (default: system)")
    p.add_argument("--cert", help="with --tls: client certificate (mutual TLS)")
    p.add_argument("--key", help="with --tls: the client certificate's key")
    p.add_argument("file", nargs="?", type=Path, help="NDJSON file (default: stdin)")

    p = sub.add_parser("query", help="search the audit trail (docs/audit.md)")
    _add_state_options(p)
    for name in ("event-type", "action", "user-id", "username", "object-type", "object-id"):
        p.add_argument(f"--{name}")
    p.add_argument("--kind", help="event, rejected, system, print, ...")
    p.add_argument("--app", help="the app that sent it (its hello's app, or its token's)")
    received = "on the gateway's receive time: "
    p.add_argument("--since", help=received + "RFC 3339, or YYYY-MM-DD (midnight)")
    p.add_argument("--until", help=received + "RFC 3339, or YYYY-MM-DD (that day included)")
    own = "on the event's own timestamp: "
    p.add_argument("--event-since", help=own + "RFC 3339, or YYYY-MM-DD (midnight)")
    p.add_argument("--event-until", help=own + "RFC 3339, or YYYY-MM-DD (that day included)")
    p.add_argument("--flagged", action="store_true", help="only events with flags")
    p.add_argument("--text", help="full text over the event's content")
    many = p.add_mutually_exclusive_group()
    many.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="rows to print (default 50)")
    many.add_argument("--all", action="store_true", help="every matching row (streamed)")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument(
        "--order",
        choices=["asc", "desc"],
        help="by seq (default: newest first in a table, oldest first in csv and jsonl)",
    )
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default="table")
    p.add_argument("--no-check", action="store_true", help=NO_CHECK_HELP)
    p.add_argument("--verify", action="store_true", help="the default (kept for old scripts)")
    _add_zone_option(p)

    p = sub.add_parser("show", help="one entry in full, checked, with a diff of old/new values")
    _add_state_options(p)
    p.add_argument("seq", type=int)
    p.add_argument("--no-check", action="store_true", help=NO_CHECK_HELP)
    _add_zone_option(p)

    p = sub.add_parser("reindex", help="rebuild the query index from the ledger")
    _add_state_options(p)

    p = sub.add_parser("status", help="the running gateway's state")
    _add_state_options(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")

    p = sub.add_parser("reprint", help="reprint a receipt, marked COPY n")
    _add_state_options(p)
    p.add_argument("--seq", type=int, help="the event's seq (default: the last receipt)")
    p.add_argument("--printer", help="printer name (default: where it was printed)")

    p = sub.add_parser("print-status-page", help="print the status page")
    _add_state_options(p)
    p.add_argument("--printer", help="printer name (default: the first route's)")

    p = sub.add_parser("report", help="the daily compliance report of one day")
    _add_state_options(p)
    p.add_argument("--date", required=True, help="the local day, YYYY-MM-DD")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--printer", help="make a numbered report and print it there")
    where.add_argument("--out", type=Path, help="write an unnumbered preview to this file")
    p.add_argument("--language", choices=sorted(LANGUAGES), default="text",
                   help="with --out: the printer language (default text)")  # fmt: skip
    p.add_argument("--width", type=int, default=80, help="with --out: characters per line")
    _add_zone_option(p)

    p = sub.add_parser("press-button", help="press the fake board's button (development)")
    _add_state_options(p)
    hold = "seconds held (3 or more: the status page; default 0.2: a reprint)"
    p.add_argument("--hold", type=float, default=0.2, help=hold)

    from gateway.web import usercli

    usercli.add_parser(sub, _add_state_options)

    p = sub.add_parser("emulate-printer", help="a port 9100 printer that writes jobs to files")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--out", default="./var/emulator", help="directory for the jobs")
    faults = "refuse | reset-after=BYTES | stall | slow | close-before-read"
    p.add_argument("--fault", default="none", help=faults)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    # From the first instruction a SIGTERM or SIGINT is a request for a clean
    # stop, never the default action (gateway/earlysignals.py).
    from gateway import earlysignals

    earlysignals.catch()
    from gateway.logs import setup_logging
    from gateway.service import Gateway

    config = _config(args)
    setup_logging(config.log.level)
    # The process runs in the configured zone, so that every local day and time
    # it computes (the daily report's schedule and days) is the zone's.
    os.environ["TZ"] = config.zone_name
    time.tzset()
    gateway = Gateway(config)
    try:
        gateway.start()
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if earlysignals.caught:
        gateway.loop.post(gateway.request_stop)
    return gateway.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CannotAnswer(f"no configuration file at {args.file}")
    config = load_config(args.file)  # a ConfigError says file, key and reason (exit 1)
    printers = ", ".join(config.printers) or "none: nothing will be printed"
    print(f"ok: {args.file}")
    print(f"state_dir   {config.state_dir}")
    print(f"listen      {', '.join(config.ingest.listen)}")
    print(f"printers    {printers}")
    print(f"timezone    {config.zone_name}" + ("" if config.timezone else " (the box's)"))
    return EXIT_OK


def _anchors(args: argparse.Namespace) -> list:
    from gateway.ledger.verify import parse_anchor, parse_anchor_file

    try:
        anchors = [parse_anchor(text) for text in args.expect]
        if args.expect_file is not None:
            try:
                text = args.expect_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise CannotAnswer(f"cannot read {args.expect_file}: {exc.strerror}") from None
            anchors += parse_anchor_file(text)
    except ValueError as exc:
        raise CannotAnswer(f"verify: {exc}") from None
    return anchors


def _checkpoint_anchor(args: argparse.Namespace, config: Config):
    """The anchor a signed checkpoint note gives, once its signature verifies (None: it does
    not, said on stdout)."""
    from gateway.fleet.identity import load_public, parse_vkey
    from gateway.fleet.note import NoteError, verify_note
    from gateway.ledger.verify import ExpectedAnchor

    try:
        note = args.checkpoint.read_bytes()
    except OSError as exc:
        raise CannotAnswer(f"cannot read {args.checkpoint}: {exc.strerror}") from None
    try:
        key = parse_vkey(args.key) if args.key else load_public(config.state_dir)
    except GatewayError as exc:
        raise CannotAnswer(str(exc)) from None
    try:
        checkpoint = verify_note(note, key)
    except NoteError as exc:
        print(f"CHECKPOINT REFUSED: {args.checkpoint}: {exc}")
        return None
    print(
        f"checkpoint {args.checkpoint}: signed by {key.key_name} "
        f"(fingerprint {key.fingerprint[:16]}), head seq {checkpoint.seq}"
    )
    return ExpectedAnchor(checkpoint.seq, checkpoint.hash.hex())


def cmd_identity(args: argparse.Namespace) -> int:
    from gateway.fleet.identity import load_identity, load_public

    config = _existing_state(args)
    try:
        identity = load_identity(config.state_dir, config.name).public
    except PermissionError:  # an auditor without the private key: the public file
        try:
            identity = load_public(config.state_dir)
        except GatewayError as exc:
            raise CannotAnswer(str(exc)) from None
    if args.json:
        print(json.dumps(identity.as_json()))
        return EXIT_OK
    print(
        f"box          {identity.box}\n"
        f"fingerprint  {identity.fingerprint}\n"
        f"verifier key {identity.vkey}\n"
        f"origin       {identity.origin}"
    )
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    from gateway.fleet.command import cmd_fleet as run

    return run(args, _existing_state)


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.ledger.verify import check_anchors, verify_ledger

    config = _existing_state(args)
    if args.archive is not None and not args.archive.is_dir():
        raise CannotAnswer(f"no archive directory at {args.archive}")
    anchors = _anchors(args)
    signed = None
    if args.checkpoint is not None:
        signed = _checkpoint_anchor(args, config)
        if signed is None:
            return EXIT_FAILURE
        anchors.append(signed)
    try:
        result = verify_ledger(config.ledger_dir, args.archive, args.jobs)
    except OSError as exc:  # an unreadable file, or a directory named like a segment
        raise CannotAnswer(f"cannot read the ledger: {exc}") from None
    checks = check_anchors(config.ledger_dir, anchors, args.archive) if result.ok else []
    missed = [c for c in checks if not c.ok]
    ok = result.ok and not missed
    if args.statement is not None:
        _write_statement(args, config, result, checks)
    if args.json:
        data = result.as_json()
        if anchors:
            data["anchors"] = [
                {"anchor": str(c.anchor), "ok": c.ok, "found": c.found, "reason": c.reason}
                for c in checks
            ]
            data["ok"] = ok
        print(json.dumps(data))
        return EXIT_OK if ok else EXIT_FAILURE
    where = ""
    if result.archive is not None:
        where = f" ({result.archived_segments} from the archive, {result.overlaps} also live)"
    start = result.start
    if result.restored_from is not None:
        where = result.restored_from
        print(
            f"verified from the restored head at seq {start.seq} hash {start.hash.hex()} "
            f"(recorded at seq {result.checkpoint_seq} by gateway fleet restore --head-only); "
            f"earlier entries are in the fleet store: box {where['box']} in bucket "
            f"{where['bucket']} at {where['endpoint']} (check them with gateway fleet verify)"
        )
    elif result.checkpoint_seq is not None:
        print(
            f"verified from retained checkpoint at seq {start.seq} hash {start.hash.hex()} "
            f"(recorded at seq {result.checkpoint_seq}); earlier entries are not in the "
            "ledger: check them against the archive (--archive DIR) or a kept anchor"
        )
    for first, last, name in result.losses:
        print(
            f"LOSS ACCEPTED: seqs {first} to {last} were given up (gateway accept-loss); "
            f"the chain continues in {name}"
        )
    if result.ok:
        tail = (
            " (an incomplete entry at the live tail was ignored)" if result.tail_incomplete else ""
        )
        print(
            f"ok: {result.entries} entries in {result.segments} segments{where}; "
            f"head seq {result.head_seq} hash {result.head_hash.hex()}{tail}"
        )
    else:
        print(
            f"DAMAGED: first bad seq {result.first_bad_seq} in {result.file} "
            f"at offset {result.offset}: {result.reason}"
        )
    for c in checks:
        if c.ok:
            print(f"anchor {c.anchor}: on the chain (hash {c.found})")
        else:
            print(f"ANCHOR MISSED: {c.anchor}: {c.reason}" + (f" ({c.found})" if c.found else ""))
    if anchors and not result.ok:
        print(f"anchors not checked: the chain is damaged ({len(anchors)} given)")
    if args.statement is not None:
        print(f"statement written to {args.statement}")
    return EXIT_OK if ok else EXIT_FAILURE


def _write_statement(args: argparse.Namespace, config: Config, result, checks: list) -> None:
    import shlex
    import socket

    from gateway.audit import statement
    from gateway.ledger.store import LedgerReader

    tz, name, _note = _zone(args, config)
    start = result.start
    if start.seq == 0:
        try:
            first = next(LedgerReader(config.ledger_dir).entries(1, 1), None)
            identity = f"seq 1 hash {first[2].hex()}" if first else "empty ledger"
        except LedgerCorruption as exc:
            identity = f"unreadable: {exc.reason}"
    elif result.restored_from is not None:
        identity = (
            f"from the restored head at seq {start.seq} hash {start.hash.hex()} (earlier "
            f"entries in the fleet store: box {result.restored_from['box']}, bucket "
            f"{result.restored_from['bucket']})"
        )
    else:
        identity = (
            f"from the retained checkpoint at seq {start.seq} hash {start.hash.hex()} "
            "(earlier entries removed by retention)"
        )
    checked = f"seq {start.seq + 1} to {result.head_seq}: {result.entries} entries in "
    checked += f"{result.segments} segments"
    if result.archive is not None:
        checked += f" ({result.archived_segments} from the archive {result.archive})"
    verdict = "INTACT" if result.ok else (
        f"DAMAGED: first bad seq {result.first_bad_seq} in {result.file} at offset "
        f"{result.offset}: {result.reason}"
    )  # fmt: skip
    anchors = [
        f"{c.anchor}: " + ("on the chain" if c.ok else f"MISSED ({c.reason})") for c in checks
    ]
    now = dt.datetime.now(tz).strftime("%Y-%m-%d %H:%M:%S %z")
    s = statement.Statement(
        gateway=config.name or socket.gethostname(),
        version=__version__,
        state_dir=str(config.state_dir.resolve()),
        identity=identity,
        checked=checked,
        head=f"seq {result.head_seq} hash {result.head_hash.hex()}",
        verdict=verdict,
        anchors=anchors or ([] if result.ok else ["not checked: the chain is damaged"]),
        at=f"{now} {name}",
        command=shlex.join(["gateway", *args.argv]),
    )
    text = statement.as_html(s) if args.statement.suffix == ".html" else statement.as_text(s)
    args.statement.write_text(text, encoding="utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.audit.check import checked_entries, damaged_line

    config = _existing_state(args)
    out = sys.stdout
    damaged = 0
    for item in checked_entries(config.ledger_dir, args.from_seq, args.to_seq, not args.no_check):
        if item.damage:
            damaged += 1
            out.write(json.dumps({"seq": item.seq, "damaged": item.damage}) + "\n")
            print(damaged_line(item), file=sys.stderr)
        else:
            out.write(json.dumps(item.record, ensure_ascii=False, separators=(",", ":")) + "\n")
    if args.no_check:
        print("entries not checked against the chain (--no-check)", file=sys.stderr)
    return EXIT_FAILURE if damaged else EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    from gateway.client import (
        Unreachable,
        numbered_event_lines,
        send_events,
        send_with_retries,
        with_event_id,
    )

    if args.file is None:
        numbered = numbered_event_lines(sys.stdin.buffer)
    else:
        try:
            with open(args.file, "rb") as f:
                numbered = numbered_event_lines(f)
        except OSError as exc:
            raise CannotAnswer(f"cannot read {args.file}: {exc.strerror or exc}") from None
    lines = [line for _n, line in numbered]
    try:
        token = args.token or os.environ.get("GATEWAY_TOKEN") or None
        if args.token_file is not None:
            token = args.token_file.read_text(encoding="utf-8").strip()
        tls = None
        if args.tls:
            from gateway.client import client_tls_context

            tls = client_tls_context(args.ca, args.cert, args.key)
        options = {"app": args.app, "timeout": args.timeout, "token": token, "tls": tls}
        if args.ack and not args.no_event_ids:
            # Each line keeps one event_id for every attempt: a resend is recognised.
            lines = [with_event_id(line.rstrip(b"\n"))[0] + b"\n" for line in lines]
            result = send_with_retries(
                args.host, args.port, lines, retries=max(0, args.retries), **options
            )
        else:
            result = send_events(args.host, args.port, lines, ack=args.ack, **options)
    except Unreachable as exc:  # nothing answers at host:port
        raise CannotAnswer(f"send: {exc.strerror or exc}") from None
    except OSError as exc:  # it answered, and the exchange failed (TLS refused, reset, ...)
        print(f"gateway send: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    where = args.file or "stdin"
    for refusal, at in zip(result.refused, result.refused_at, strict=True):
        print(f"refused: {where} line {numbered[at][0]}: {json.dumps(refusal)}", file=sys.stderr)
    if result.error:
        print(f"gateway send: {result.error}", file=sys.stderr)
    if args.ack:
        print(f"sent {result.sent}, acknowledged {result.acked}, refused {len(result.refused)}")
        return EXIT_OK if result.ok else EXIT_FAILURE
    print(f"sent {result.sent}")
    return EXIT_OK if result.error is None else EXIT_FAILURE


def _control(args: argparse.Namespace, command: dict) -> dict:
    from gateway.control import request

    config = _existing_state(args)
    try:
        return request(config.control_path, command)
    except OSError as exc:
        raise CannotAnswer(
            f"no running gateway answers on {config.control_path}: {exc.strerror or exc}"
        ) from None


def _answer(reply: dict, text: str) -> int:
    if not reply.get("ok"):
        print(f"gateway: {reply.get('error', 'refused')}", file=sys.stderr)
        return EXIT_FAILURE
    print(text)
    return EXIT_OK


def _filters(args: argparse.Namespace, tz: dt.tzinfo) -> object:
    from gateway.audit.query import Filters

    def moment(text: str | None, end: bool = False) -> int | None:
        return None if text is None else zone.parse_time(text, tz, end)

    if not args.all and args.limit < 1:
        raise ValueError("--limit must be 1 or more (--all prints every row)")
    if args.offset < 0:
        raise ValueError("--offset must be 0 or more")
    return Filters(
        event_type=args.event_type,
        action=args.action,
        user_id=args.user_id,
        username=args.username,
        object_type=args.object_type,
        object_id=args.object_id,
        kind=args.kind,
        app=args.app,
        since_us=moment(args.since),
        until_us=moment(args.until, end=True),
        event_since_us=moment(args.event_since),
        event_until_us=moment(args.event_until, end=True),
        flagged=args.flagged,
        text=args.text,
        limit=args.limit,
        offset=args.offset,
        order=args.order or ("desc" if args.format == "table" else "asc"),
    )


def cmd_query(args: argparse.Namespace) -> int:
    from gateway.audit import present
    from gateway.audit.check import Cursor
    from gateway.audit.query import FETCH_CHUNK, REMOVED, QueryView, check_rows, stream

    config = _existing_state(args)
    tz, _name, note = _zone(args, config)
    try:
        filters = _filters(args, tz)
    except ValueError as exc:
        print(f"gateway query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    check = not args.no_check
    cursor = Cursor(config.ledger_dir) if check else None
    writer = present.Writer(args.format, sys.stdout, tz, note)
    damaged = unchecked = 0

    def emit(rows: list) -> None:
        nonlocal damaged, unchecked
        problems = check_rows(cursor, rows) if cursor is not None else {}
        removed = {seq for seq, why in problems.items() if why == REMOVED}
        damaged += len(problems) - len(removed)
        unchecked += len(removed)
        for r in rows:
            seq = r["seq"]
            if seq in removed:
                writer.row(r, None, check, unchecked=REMOVED)
            else:
                writer.row(r, problems.get(seq), check)

    with QueryView(config.state_dir) as view:
        if args.all:
            chunk: list = []
            for r in stream(view, filters):
                chunk.append(r)
                if len(chunk) == FETCH_CHUNK:
                    emit(chunk)
                    chunk = []
            emit(chunk)
            shown = f"showing all {writer.count:,}"
        else:
            rows = view.page(filters)
            emit(rows)
            if len(rows) < filters.limit and (rows or not filters.offset):
                total = filters.offset + len(rows)
            else:
                total = view.count(filters)
            shown = f"showing {len(rows):,} of {total:,}"
            if filters.offset:
                shown += f" from row {filters.offset + 1:,}"
            if len(rows) + filters.offset < total:
                shown += "; --all for every row"
        result = view.result([])
    where = sys.stderr if args.format != "table" else sys.stdout
    print(shown, file=sys.stderr)
    print(present.provenance(result, check), file=where)
    if unchecked:
        print(
            f"NOT CHECKED: {unchecked} rows of entries {REMOVED} (gateway verify --archive "
            "checks them; --no-check lists them from the index)",
            file=sys.stderr,
        )
    if damaged:
        print(f"DAMAGED: {damaged} rows failed the check (gateway verify)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from gateway.audit import present
    from gateway.audit.check import checked_entries, damaged_line
    from gateway.ledger.store import LedgerReader

    config = _existing_state(args)
    tz, _name, note = _zone(args, config)
    item = next(checked_entries(config.ledger_dir, args.seq, args.seq, not args.no_check), None)
    if item is None or (item.seq != args.seq and not item.damage):
        gone = 0 < args.seq <= LedgerReader(config.ledger_dir).base().seq
        why = "was removed from the live ledger by retention" if gone else "does not exist"
        print(f"gateway show: entry {args.seq} {why}", file=sys.stderr)
        return EXIT_FAILURE
    if item.damage:
        print(damaged_line(item))
        return EXIT_FAILURE
    assert item.record is not None
    sys.stdout.write(present.detail(item.record, tz, note))
    if args.no_check:
        print("check       not checked against the chain (--no-check)")
    else:
        print("check       ok: its stored bytes and the previous entry's hash give its hash")
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace) -> int:
    import fcntl
    import os

    from gateway.audit import index

    config = _existing_state(args)
    lock = os.open(config.state_dir / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print("gateway reindex: the gateway is running; stop it first", file=sys.stderr)
            return EXIT_FAILURE
        path = config.state_dir / index.INDEX_FILE
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = index.open_index(path)
        try:
            n = index.catch_up(db, config.ledger_dir)
        finally:
            db.close()
    finally:
        os.close(lock)
    print(f"indexed {n} entries into {path}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    reply = _control(args, {"cmd": "status"})
    if args.json or not reply.get("ok"):
        print(json.dumps(reply.get("status", reply)))
        return EXIT_OK if reply.get("ok") else EXIT_FAILURE
    st = reply["status"]
    lines = [
        f"health      {st['health']}",
        f"version     {st['version']}, up {st['uptime_s']:.0f} s",
        f"listening   {', '.join(st['listen'])}",
        f"ledger      {st['ledger']['entries']} entries, head seq {st['ledger']['head_seq']} "
        f"hash {st['ledger']['head_hash'][:16]}",
        f"connections {st['connections']}, {st['acks_pending']} acks pending",
        "ingest      {1m} / {5m} / {15m} events/s over 1 / 5 / 15 min".format(**st["ingest_rates"])
        + f", {st.get('ingest_path', 'python')} path",
        f"commits     p50 {st['sync_ms']['p50']} ms, p99 {st['sync_ms']['p99']} ms",
        f"ack wait    p50 {st['ack_wait_ms']['p50']} ms, p99 {st['ack_wait_ms']['p99']} ms "
        "(first read to acknowledged, last minute)",
        f"index       to seq {st['index']['indexed_seq']}, {st['index']['lag']} behind"
        + (f" ({st['index']['error']})" if st["index"]["error"] else "")
        if st["index"]["enabled"]
        else "index       off",
    ]
    dedup = st.get("dedup")
    if dedup and dedup["state"] != "off":
        lines.append(
            f"event ids   {dedup['state']}, {dedup['ids']} of {dedup['capacity']} held "
            f"({dedup['window_s'] / 3600:g} h window), {dedup['duplicates']} resends, "
            f"{dedup['conflicts']} conflicts"
            + (f", {dedup['evicted_early']} forgotten early" if dedup["evicted_early"] else "")
        )
    if "identity" in st:
        lines.append(
            f"identity    {st['identity']['box']}, key fingerprint {st['identity']['fingerprint']}"
        )
    if st.get("checkpoint", {}).get("latest_seq"):
        lines.append(f"checkpoint  {st['checkpoint']['latest_short']}")
    replication = st.get("replication", {})
    if replication.get("enabled"):
        lines.append(
            f"replication {replication['state']}: {replication['lag_segments']} segments "
            f"({replication['lag_bytes']} bytes) behind, oldest waiting "
            f"{replication['lag_s']:.0f} s, {replication['uploaded']} uploaded"
            + (f" (error: {replication['error']})" if replication["error"] else "")
        )
    retention = st["retention"]
    if retention["active"]:
        lines.append(
            f"retention   {retention['archived']} archived, {retention['removed']} removed "
            f"in {retention['passes']} passes since start"
            + (f" (error: {retention['error']})" if retention["error"] else "")
        )
    web = st.get("web")
    if web:
        lines.append(
            f"web         {', '.join(web['listen'])}: {web['sessions']} sessions, "
            f"{web['connections']} connections"
            + (f"; TLS SHA-256 {web['tls_fingerprint']}" if web["tls_fingerprint"] else "")
        )
    for p in st.get("printers", []):
        error = f" ({p['error']}, for {p['error_for_s']:.0f} s)" if p["state"] == "error" else ""
        lines.append(f"printer     {p['name']}: {p['state']}{error}, {p['queued']} queued")
    print("\n".join(lines))
    return EXIT_OK


def cmd_reprint(args: argparse.Namespace) -> int:
    reply = _control(args, {"cmd": "reprint", "seq": args.seq, "printer": args.printer})
    return _answer(reply, f"reprint of seq {reply.get('seq')} queued as COPY {reply.get('copy')}")


def cmd_print_status_page(args: argparse.Namespace) -> int:
    reply = _control(args, {"cmd": "print_status_page", "printer": args.printer})
    return _answer(reply, f"status page queued ({reply.get('job')})")


def cmd_report(args: argparse.Namespace) -> int:
    import datetime as dt

    try:
        date = dt.date.fromisoformat(args.date)
    except ValueError:
        print("gateway report: --date must be YYYY-MM-DD", file=sys.stderr)
        return EXIT_USAGE
    if args.out is None:
        reply = _control(args, {"cmd": "report", "date": args.date, "printer": args.printer})
        return _answer(
            reply, f"report no. {reply.get('number')} ({reply.get('count')} entries) queued"
        )
    import socket

    from gateway.printing.reports import collect_day
    from gateway.render.languages import render
    from gateway.render.templates import daily_report

    config = _existing_state(args)
    _tz, name, note = _zone(args, config)
    rows, first, last, last_hash = collect_day(config.ledger_dir, date, zone_name=name)
    doc = daily_report(
        config.name or socket.gethostname(), args.date, None, rows, first, last, last_hash,
        zone_name=name,
    )  # fmt: skip
    args.out.write_bytes(render(doc, args.language, args.width))
    print(f"preview of {args.date} in {note}: {len(rows)} entries written to {args.out}")
    return EXIT_OK


def cmd_press_button(args: argparse.Namespace) -> int:
    from board.fake import press

    config = _existing_state(args)
    fifo = Path(config.board.button.device or config.fake_board_dir / "button")
    try:
        press(fifo, args.hold, config.board.button.keycode)
    except OSError as exc:
        print(f"gateway press-button: {fifo}: {exc.strerror or exc} (is the gateway running "
              "with the fake board?)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    print(f"pressed for {args.hold:g} s")
    return EXIT_OK


def cmd_user(args: argparse.Namespace) -> int:
    from gateway.web import usercli

    return usercli.run(args, _config(args).state_dir)


def cmd_accept_loss(args: argparse.Namespace) -> int:
    """Record a `loss` entry for the damage start-up found, and skip its seqs for good."""
    from gateway.ledger import entries
    from gateway.ledger.store import LedgerWriter
    from gateway.statedir import lock_state_dir

    config = _existing_state(args)
    fd = lock_state_dir(config.state_dir)  # the gateway must be stopped
    try:
        writer = LedgerWriter(
            config.ledger_dir,
            segment_bytes=config.ledger.segment_bytes,
        )
        writer.sync = config.ledger.fsync != "off"
        writer.open()
        damage = writer.damage
        if damage is None:
            print("no loss to accept: the ledger holds every entry its high-water mark records")
            return EXIT_OK
        print(f"loss: {damage.describe()}")
        if args.dry_run:
            print("dry run: nothing recorded")
            return EXIT_OK
        detail = {**damage.as_json(), "reason_given": args.reason, "pid": os.getpid()}
        now_us = time.time_ns() // 1000
        # The quarantine's name and digest are known only once the bytes are moved:
        # the entry records the damage; the quarantine file is named beside it.
        seq, cut = writer.accept_loss(entries.encode_system(now_us, "loss", detail))
        where = (
            f"; damaged bytes kept in {cut.quarantine_file}" if cut and cut.quarantine_file else ""
        )
        print(
            f"recorded: loss entry at seq {seq}; seqs {damage.first_seq} to {damage.last_seq} "
            f"are given up for good{where}"
        )
        return EXIT_OK
    finally:
        os.close(fd)


def cmd_emulate_printer(args: argparse.Namespace) -> int:
    from gateway.printing import emulator

    return emulator.main(
        ["--host", args.host, "--port", str(args.port), "--out", args.out, "--fault", args.fault]
    )


COMMANDS = {
    "run": cmd_run,
    "check-config": cmd_check_config,
    "verify": cmd_verify,
    "identity": cmd_identity,
    "fleet": cmd_fleet,
    "accept-loss": cmd_accept_loss,
    "export": cmd_export,
    "send": cmd_send,
    "query": cmd_query,
    "show": cmd_show,
    "reindex": cmd_reindex,
    "status": cmd_status,
    "reprint": cmd_reprint,
    "print-status-page": cmd_print_status_page,
    "report": cmd_report,
    "press-button": cmd_press_button,
    "emulate-printer": cmd_emulate_printer,
    "user": cmd_user,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the statement
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"gateway: configuration refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except LedgerCorruption as exc:
        print(f"gateway: DAMAGED: ledger damaged at {exc} (gateway verify)", file=sys.stderr)
        return EXIT_FAILURE
    except LedgerError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    except CannotAnswer as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PermissionError as exc:
        # A user outside the service's group (docs/audit.md, read-only access).
        where = exc.filename or "the state directory"
        print(f"gateway: permission denied: {where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
