"""The `gateway` command line: run, verify, export, send."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway import __version__
from gateway.config import Config, load_config
from gateway.errors import ConfigError, LedgerCorruption, LedgerError

EXIT_OK = 0
EXIT_FAILURE = 1  # verification failed, events refused, the gateway could not start
EXIT_USAGE = 2


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
        raise LedgerError(f"no state directory at {config.state_dir}")
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Compliance print gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the gateway in the foreground")
    _add_state_options(p)

    p = sub.add_parser("verify", help="re-derive the ledger's hash chain from genesis")
    _add_state_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("export", help="print ledger entries")
    _add_state_options(p)
    p.add_argument("--from-seq", type=int, default=1)
    p.add_argument("--to-seq", type=int)
    p.add_argument("--format", choices=["jsonl"], default="jsonl")

    p = sub.add_parser("send", help="send NDJSON events from a file or stdin")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50001)
    p.add_argument("--app", help="app name sent in the hello line")
    p.add_argument("--ack", action="store_true", help="wait for every acknowledgement")
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout in seconds")
    p.add_argument("file", nargs="?", type=Path, help="NDJSON file (default: stdin)")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.service import Gateway

    config = _config(args)
    setup_logging(config.log.level)
    gateway = Gateway(config)
    try:
        gateway.start()
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return gateway.run()


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.ledger.verify import verify_ledger

    config = _existing_state(args)
    result = verify_ledger(config.ledger_dir)
    if args.json:
        print(json.dumps(result.as_json()))
    elif result.ok:
        tail = (
            " (an incomplete entry at the live tail was ignored)" if result.tail_incomplete else ""
        )
        print(
            f"ok: {result.entries} entries in {result.segments} segments; "
            f"head seq {result.head_seq} hash {result.head_hash.hex()}{tail}"
        )
    else:
        print(
            f"DAMAGED: first bad seq {result.first_bad_seq} in {result.file} "
            f"at offset {result.offset}: {result.reason}"
        )
    return EXIT_OK if result.ok else EXIT_FAILURE


def cmd_export(args: argparse.Namespace) -> int:
    from gateway.ledger import entries
    from gateway.ledger.store import LedgerReader

    config = _existing_state(args)
    reader = LedgerReader(config.ledger_dir)
    out = sys.stdout
    for seq, payload, digest in reader.entries(args.from_seq, args.to_seq):
        record = entries.export_record(seq, digest, entries.decode(payload))
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    from gateway.client import event_lines, send_events

    if args.file is None:
        lines = event_lines(sys.stdin.buffer)
    else:
        with open(args.file, "rb") as f:
            lines = event_lines(f)
    try:
        result = send_events(
            args.host, args.port, lines, app=args.app, ack=args.ack, timeout=args.timeout
        )
    except OSError as exc:
        print(f"gateway send: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for refusal in result.refused:
        print(f"refused: {json.dumps(refusal)}", file=sys.stderr)
    if result.error:
        print(f"gateway send: {result.error}", file=sys.stderr)
    if args.ack:
        print(f"sent {result.sent}, acknowledged {result.acked}, refused {len(result.refused)}")
        return EXIT_OK if result.ok else EXIT_FAILURE
    print(f"sent {result.sent}")
    return EXIT_OK if result.error is None else EXIT_FAILURE


COMMANDS = {"run": cmd_run, "verify": cmd_verify, "export": cmd_export, "send": cmd_send}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"gateway: configuration refused: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except LedgerCorruption as exc:
        print(f"gateway: ledger damaged: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except LedgerError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
