"""`gateway fleet verify|list|check`: the HQ verifier and its companions on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.errors import GatewayError

__all__ = ["add_fleet_parser", "cmd_fleet"]


def _store_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--endpoint", required=required, help="S3 endpoint URL (http:// or https://)")
    p.add_argument("--bucket", required=required, help="the bucket")
    p.add_argument(
        "--credentials-file",
        type=Path,
        required=required,
        help="YAML with access_key_id and secret_access_key",
    )
    p.add_argument("--region", default="", help="SigV4 region (default us-east-1)")
    p.add_argument("--ca-file", default="", help="PEM CA bundle for an https endpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_fleet_parser(sub, add_state_options) -> None:
    fleet = sub.add_parser("fleet", help="the fleet's copy in S3: verify, list, check")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True)
    p = fsub.add_parser("verify", help="verify every box in the bucket (runs anywhere)")
    _store_options(p, True)
    p.add_argument("--box", action="append", default=[], help="only this box (repeatable)")
    p.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="BOX:SEQ:HASH",
        help="an anchor from paper the box's chain must pass through (repeatable)",
    )
    p = fsub.add_parser("list", help="each box, its last checkpoint and its lag")
    _store_options(p, True)
    p = fsub.add_parser(
        "restore", help="on a new box's empty state directory: continue a box's chain"
    )
    add_state_options(p)
    p.add_argument("--box", required=True, help="the replaced box's name in the bucket")
    p.add_argument(
        "--head-only",
        action="store_true",
        help="take only the chain head (checked against a signed checkpoint); the earlier "
        "entries stay in the store",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = fsub.add_parser("check", help="compare this box's local segments with the store's")
    add_state_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _client(args: argparse.Namespace):
    from gateway.fleet.s3 import S3Client, load_credentials

    return S3Client(
        args.endpoint,
        args.bucket,
        load_credentials(args.credentials_file),
        region=args.region,
        ca_file=args.ca_file,
    )


def cmd_fleet(args: argparse.Namespace, config_of) -> int:
    from gateway.fleet.s3 import S3Error, S3Unavailable

    try:
        if args.fleet_command == "verify":
            return _verify(args)
        if args.fleet_command == "list":
            return _list(args)
        if args.fleet_command == "restore":
            return _restore(args, config_of(args))
        return _check(args, config_of(args))
    except (S3Error, S3Unavailable) as exc:
        print(f"gateway fleet: the store: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gateway fleet: {exc}", file=sys.stderr)
        return 2


def _verify(args: argparse.Namespace) -> int:
    from gateway.fleet.hq import verify_bucket

    client = _client(args)
    try:
        reports = verify_bucket(client, args.expect, args.box or None)
    finally:
        client.close()
    ok = bool(reports) and all(r.ok for r in reports)
    if args.json:
        print(json.dumps({"ok": ok, "boxes": [r.as_json() for r in reports]}))
        return 0 if ok else 1
    print(f"{'box':<24} {'segments':>8} {'head seq':>10} {'checkpoints':>11}  result")
    for r in reports:
        print(
            f"{r.box:<24} {r.segments:>8} {r.head_seq:>10} {r.checkpoints:>11}  "
            + ("ok" if r.ok else f"FAILED ({len(r.findings)})")
        )
    for r in reports:
        for finding in r.findings:
            print(f"FAIL {finding}")
    if not reports:
        print("no box in the bucket")
    return 0 if ok else 1


def _list(args: argparse.Namespace) -> int:
    from gateway.fleet.hq import list_boxes

    client = _client(args)
    try:
        boxes = list_boxes(client)
    finally:
        client.close()
    if args.json:
        print(json.dumps(boxes))
        return 0
    print(f"{'box':<24} {'segments':>8} {'last checkpoint':>16} {'last upload':<26} lag")
    for b in boxes:
        print(
            f"{b['box']:<24} {b['segments']:>8} {b['last_checkpoint_seq']:>16} "
            f"{b['last_upload']:<26} {b['lag_s']:.0f} s"
        )
    return 0


def _box_client(config):
    from gateway.fleet.s3 import S3Client, load_credentials

    fleet = config.fleet
    if not fleet.enabled:
        raise GatewayError("fleet.endpoint is not configured: there is no store to ask")
    return S3Client(
        fleet.endpoint,
        fleet.bucket,
        load_credentials(fleet.credentials_file),
        region=fleet.region,
        ca_file=fleet.ca_file,
    )


def _restore(args: argparse.Namespace, config) -> int:
    from gateway.fleet.restore import restore_box

    client = _box_client(config)
    try:
        detail = restore_box(client, args.box, config, head_only=args.head_only)
    finally:
        client.close()
    if args.json:
        print(json.dumps(detail))
        return 0
    if detail["head_only"]:
        print(
            f"restored the head of {args.box}: the ledger continues after seq "
            f"{detail['head_seq']} (hash {detail['head_hash'][:16]}), on the chain of the "
            f"checkpoint at seq {detail['checkpoint_seq']} signed by key "
            f"{detail['key_fingerprint'][:16]} ({detail['key_from']}); seqs 1 to "
            f"{detail['head_seq']} stay in the store ({detail['segments']} segments, "
            f"{detail['segments_downloaded']} downloaded to check the head)"
        )
    else:
        print(
            f"restored {detail['segments']} segments of {args.box}: the ledger continues after "
            f"seq {detail['head_seq']} (hash {detail['head_hash'][:16]})"
        )
    if detail["lost"]:
        first, last = detail["lost"]
        print(
            f"seqs {first} to {last} were signed by the old box but never replicated: they "
            "were on its card only, and fleet verify will name those checkpoints"
        )
    return 0


def _check(args: argparse.Namespace, config) -> int:
    from gateway.fleet.hq import check_local
    from gateway.fleet.identity import box_name
    from gateway.fleet.s3 import S3Client, load_credentials

    fleet = config.fleet
    if not fleet.enabled:
        raise GatewayError("fleet.endpoint is not configured: nothing to compare with")
    client = S3Client(
        fleet.endpoint,
        fleet.bucket,
        load_credentials(fleet.credentials_file),
        region=fleet.region,
        ca_file=fleet.ca_file,
    )
    box = box_name(config.name)
    try:
        findings, matched, waiting = check_local(client, box, config.ledger_dir)
    finally:
        client.close()
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not findings,
                    "box": box,
                    "matched": matched,
                    "not_replicated": waiting,
                    "findings": [str(f) for f in findings],
                }
            )
        )
    else:
        print(f"{box}: {matched} segments match the store, {waiting} not replicated yet")
        for f in findings:
            print(f"CHANGED {f}")
    return 1 if findings else 0
