"""The HQ side: verify every box in a bucket, list them, and compare a box with its copy.

`verify_bucket` runs anywhere with read access to the bucket and needs no box.
For each box (a top-level prefix) it takes every version that is not a delete
marker (a deleted segment is still verified from its locked version),
treats versions with the same MD5 as one, and checks:

- the segments, downloaded into a scratch directory, with the ledger
  format's own verifier (gateway/ledger/verify.py): the chain from genesis,
  every frame, and gaps (a segment missing between two present ones);
- each segment's metadata object against the segment (BLAKE3, seqs, hashes);
- two different contents under one segment or checkpoint key: a fork or a
  rollback (a box that went on from an older ledger re-uses seqs);
- every checkpoint's signature against the box's key, the first one it
  published (identity.json): a later different key is named;
- that the chain passes through the head of every checkpoint it covers, and
  that checkpoints uploaded later never sign a lower head (no rollback);
- anchors typed from paper (`--expect BOX:SEQ:HASH`).

Every finding names the box, the seq (when there is one) and the object.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from gateway.errors import GatewayError
from gateway.fleet.identity import PublicIdentity
from gateway.fleet.note import NoteError, verify_note
from gateway.fleet.s3 import ObjectVersion, S3Client, parse_iso
from gateway.ledger import format as fmt
from gateway.ledger.verify import ExpectedAnchor, check_anchors, verify_ledger

__all__ = ["BoxReport", "Finding", "list_boxes", "verify_bucket"]


@dataclass(frozen=True)
class Finding:
    box: str
    seq: int | None
    object: str
    problem: str

    def __str__(self) -> str:
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.box}{seq} {self.object}: {self.problem}"


@dataclass
class BoxReport:
    box: str
    fingerprint: str = ""
    segments: int = 0
    head_seq: int = 0
    head_hash: str = ""
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    last_upload: str = ""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "box": self.box,
            "ok": self.ok,
            "fingerprint": self.fingerprint,
            "segments": self.segments,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "last_upload": self.last_upload,
            "findings": [
                {"box": f.box, "seq": f.seq, "object": f.object, "problem": f.problem}
                for f in self.findings
            ],
        }


def _versions(client: S3Client, prefix: str) -> dict[str, list[ObjectVersion]]:
    """key -> its versions that hold data, oldest first."""
    out: dict[str, list[ObjectVersion]] = {}
    for v in client.list_versions(prefix):
        if not v.delete_marker:
            out.setdefault(v.key, []).append(v)
    for versions in out.values():
        versions.sort(key=lambda v: v.last_modified)
    return out


def _distinct(versions: list[ObjectVersion]) -> list[ObjectVersion]:
    """One version per content (same MD5: the same bytes), oldest first."""
    seen: dict[str, ObjectVersion] = {}
    for v in versions:
        seen.setdefault(v.etag, v)
    return list(seen.values())


def list_box_names(client: S3Client) -> list[str]:
    names = {v.key.split("/", 1)[0] for v in client.list_versions("") if "/" in v.key}
    return sorted(names)


def verify_box(client: S3Client, box: str, expect: list[ExpectedAnchor] | None = None) -> BoxReport:
    report = BoxReport(box)
    found = report.findings
    objects = _versions(client, box + "/")
    if objects:
        report.last_upload = max(v.last_modified for vs in objects.values() for v in vs)

    # The key: the first identity the box published; any other is named.
    key: PublicIdentity | None = None
    identity_key = f"{box}/identity.json"
    for version in _distinct(objects.get(identity_key, [])):
        data = json.loads(client.get_object(identity_key, version.version_id))
        public = PublicIdentity(data["box"], base64.b64decode(data["public_key"]))
        if key is None:
            key = public
            report.fingerprint = public.fingerprint
        elif public.public_key != key.public_key:
            found.append(
                Finding(
                    box,
                    None,
                    f"{identity_key}?versionId={version.version_id}",
                    f"the box's key changed: {key.fingerprint[:16]} was first, "
                    f"now {public.fingerprint[:16]}",
                )
            )
    if key is None:
        found.append(Finding(box, None, identity_key, "no identity: the box's key is unknown"))

    with tempfile.TemporaryDirectory(prefix="fleet-verify-") as scratch:
        ledger = Path(scratch)
        seg_keys = sorted(
            k for k in objects if k.startswith(f"{box}/segments/") and k.endswith(".seg")
        )
        for seg_key in seg_keys:
            name = seg_key.rsplit("/", 1)[1]
            first = fmt.parse_segment_name(name)
            contents = _distinct(objects[seg_key])
            if len(contents) > 1:
                found.append(
                    Finding(
                        box,
                        first,
                        seg_key,
                        f"{len(contents)} different contents under one segment "
                        "(a fork, or a box that went on from an older ledger)",
                    )
                )
            body = client.get_object(seg_key, contents[0].version_id)
            (ledger / name).write_bytes(body)
            _check_metadata(client, box, seg_key, objects, body, first, found)
        report.segments = len(seg_keys)
        if seg_keys:
            result = verify_ledger(ledger, jobs=1)
            report.head_seq, report.head_hash = result.head_seq, result.head_hash.hex()
            if not result.ok:
                obj = f"{box}/segments/{Path(result.file or '').name}"
                found.append(Finding(box, result.first_bad_seq, obj, result.reason or "damaged"))
        notes = _check_checkpoints(client, box, objects, key, ledger, report)
        report.checkpoints = len(notes)
        anchors = list(expect or [])
        if anchors:
            if not seg_keys:
                for a in anchors:
                    found.append(Finding(box, a.seq, f"{box}/segments/", "no segments to check"))
            for check in check_anchors(ledger, anchors):
                if not check.ok:
                    found.append(
                        Finding(
                            box,
                            check.anchor.seq,
                            "--expect",
                            f"anchor {check.anchor} missed: {check.reason}",
                        )
                    )
    return report


def _check_metadata(
    client: S3Client,
    box: str,
    seg_key: str,
    objects: dict[str, list[ObjectVersion]],
    body: bytes,
    first: int | None,
    found: list[Finding],
) -> None:
    meta_key = seg_key + ".json"
    if meta_key not in objects:
        found.append(Finding(box, first, meta_key, "the segment's metadata is missing"))
        return
    digest = blake3(body).hexdigest()
    metas = [
        json.loads(client.get_object(meta_key, v.version_id)) for v in _distinct(objects[meta_key])
    ]
    if not any(m.get("blake3") == digest and m.get("bytes") == len(body) for m in metas):
        found.append(
            Finding(
                box, first, meta_key, "no metadata version matches the segment's BLAKE3 and size"
            )
        )


def _check_checkpoints(
    client: S3Client,
    box: str,
    objects: dict[str, list[ObjectVersion]],
    key: PublicIdentity | None,
    ledger: Path,
    report: BoxReport,
) -> list[tuple[str, int, bytes]]:
    found = report.findings
    notes: list[tuple[str, int, bytes, str]] = []  # (uploaded at, seq, hash, object)
    for note_key in sorted(k for k in objects if k.startswith(f"{box}/checkpoints/")):
        contents = _distinct(objects[note_key])
        hashes = set()
        for version in contents:
            obj = f"{note_key}?versionId={version.version_id}"
            text = client.get_object(note_key, version.version_id)
            if key is None:
                continue
            try:
                cp = verify_note(text, key)
            except NoteError as exc:
                found.append(Finding(box, None, obj, f"checkpoint refused: {exc}"))
                continue
            hashes.add(cp.hash)
            notes.append((version.last_modified, cp.seq, cp.hash, obj))
        if len(hashes) > 1:
            found.append(
                Finding(
                    box,
                    notes[-1][1],
                    note_key,
                    "two checkpoints sign different heads at one seq (a fork)",
                )
            )
    # The chain must pass through every head it covers.
    covered = [(seq, h, obj) for _t, seq, h, obj in notes if seq <= report.head_seq]
    if covered:
        checks = check_anchors(ledger, [ExpectedAnchor(s, h.hex()) for s, h, _o in covered])
        for (seq, _h, obj), check in zip(covered, checks, strict=True):
            if not check.ok:
                found.append(
                    Finding(
                        box,
                        seq,
                        obj,
                        f"the chain does not pass through this checkpoint's head ({check.reason})",
                    )
                )
    # Uploaded later, signed lower: the box went back (an older ledger restored).
    highest = (0, "")
    for _t, seq, _h, obj in sorted(notes):
        if seq < highest[0]:
            found.append(
                Finding(
                    box,
                    seq,
                    obj,
                    f"rollback: signed after a checkpoint at seq {highest[0]} ({highest[1]})",
                )
            )
        elif seq > highest[0]:
            highest = (seq, obj)
    report.last_checkpoint_seq = max((seq for _t, seq, _h, _o in notes), default=0)
    return [(t, s, h) for t, s, h, _o in notes]


def parse_expect(text: str) -> tuple[str, ExpectedAnchor]:
    from gateway.ledger.verify import parse_anchor

    box, sep, rest = text.partition(":")
    if not sep or not box:
        raise GatewayError(f"{text!r} is not BOX:SEQ:HASH")
    try:
        return box, parse_anchor(rest)
    except ValueError as exc:
        raise GatewayError(f"{text!r}: {exc}") from None


def verify_bucket(
    client: S3Client, expect: list[str] | None = None, boxes: list[str] | None = None
) -> list[BoxReport]:
    anchors: dict[str, list[ExpectedAnchor]] = {}
    for text in expect or []:
        box, anchor = parse_expect(text)
        anchors.setdefault(box, []).append(anchor)
    names = boxes or list_box_names(client)
    reports = [verify_box(client, name, anchors.get(name)) for name in names]
    for box in set(anchors) - set(names):
        reports.append(BoxReport(box, findings=[Finding(box, None, f"{box}/", "no such box")]))
    return reports


def list_boxes(client: S3Client) -> list[dict[str, Any]]:
    """Each box's last checkpoint and how long ago anything of it arrived (no verification)."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for box in list_box_names(client):
        objects = _versions(client, box + "/")
        notes = sorted(k for k in objects if k.startswith(f"{box}/checkpoints/"))
        segments = [k for k in objects if k.endswith(".seg")]
        last = max(v.last_modified for vs in objects.values() for v in vs)
        out.append(
            {
                "box": box,
                "segments": len(segments),
                "checkpoints": len(notes),
                "last_checkpoint_seq": int(notes[-1].rsplit("/", 1)[1].split(".")[0])
                if notes
                else 0,
                "last_upload": last,
                "lag_s": round((now - parse_iso(last)).total_seconds(), 1),
            }
        )
    return out


def check_local(client: S3Client, box: str, ledger_dir: Path) -> tuple[list[Finding], int, int]:
    """Compare a box's sealed local segments with the store's copies.

    Returns (findings, segments matched, segments not replicated yet). A local
    segment whose bytes match no version in the store changed after it was
    replicated (or the store's copy is not this box's).
    """
    import hashlib

    from gateway.ledger.store import list_segments

    objects = _versions(client, f"{box}/segments/")
    findings: list[Finding] = []
    matched = waiting = 0
    segments = list_segments(ledger_dir)
    for first, path in segments[:-1]:  # the live segment is not replicated
        key = f"{box}/segments/{path.name}"
        if key not in objects:
            waiting += 1
            continue
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if any(v.etag == md5 for v in objects[key]):
            matched += 1
        else:
            findings.append(
                Finding(
                    box,
                    first,
                    str(path),
                    f"the local segment differs from every copy in the store "
                    f"({key}): changed after replication",
                )
            )
    return findings, matched, waiting
