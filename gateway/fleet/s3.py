"""A small S3 client: AWS Signature Version 4 over http.client, only what the fleet needs.

Path-style requests (`ENDPOINT/BUCKET/KEY`), which AWS S3, Ceph RGW and MinIO
all serve. Each object is sent in one PUT with its payload's SHA-256 signed
and its Content-MD5 given, so the store refuses a body that changed on the
way; Object Lock retention is set on that PUT and read back per version.
Why not boto3 or the MinIO client: README, "Fleet replication: the S3 client".

Blocking: used from the uploader's thread and from command-line tools, never
on the loop.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.errors import GatewayError

__all__ = [
    "Credentials",
    "ObjectVersion",
    "S3Client",
    "S3Error",
    "S3Unavailable",
    "load_credentials",
]

# SigV4 signs for a region; AWS's default one when none is configured (Ceph
# RGW and MinIO accept it for their default zone).
DEFAULT_REGION = "us-east-1"
# One request may take this long on a slow branch uplink before it is given
# up and retried by the caller: a 64 MiB segment at 1 Mbit/s takes ~9 min, so
# the timeout bounds each socket operation, not the whole upload.
SOCKET_TIMEOUT_S = 60.0
# Bodies are sent in 64 KiB pieces: the bandwidth bound is applied per piece,
# and memory stays flat whatever the object's size.
SEND_CHUNK_BYTES = 64 * 1024
# A listing page: S3's own maximum (ListObjectVersions max-keys).
LIST_PAGE = 1000
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
UNRESERVED = "-_.~"
# "This version has no retention": AWS and MinIO say the first, Ceph 16 the second.
NO_RETENTION_CODES = ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")


class S3Error(GatewayError):
    """The store answered with an error: HTTP status, S3 error code, message, and the key."""

    def __init__(self, status: int, code: str, message: str, key: str = "") -> None:
        super().__init__(f"S3 {status} {code}: {message}" + (f" ({key})" if key else ""))
        self.status = status
        self.code = code
        self.message = message
        self.key = key


class S3Unavailable(GatewayError):
    """The store could not be reached or the connection broke (retried later)."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key_id={self.access_key_id!r})"


def load_credentials(path: Path) -> Credentials:
    """The YAML credentials file (`access_key_id`, `secret_access_key`)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GatewayError(f"{path}: cannot read credentials: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise GatewayError(f"{path}: credentials are not valid YAML") from None
    if not isinstance(data, dict):
        raise GatewayError(f"{path}: credentials must be a mapping")
    for key in ("access_key_id", "secret_access_key"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise GatewayError(f"{path}: {key}: required (a string)")
    extra = set(data) - {"access_key_id", "secret_access_key"}
    if extra:
        raise GatewayError(f"{path}: {sorted(extra)[0]}: unknown key")
    return Credentials(data["access_key_id"], data["secret_access_key"])


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    is_latest: bool
    size: int
    etag: str
    last_modified: str
    delete_marker: bool = False


def _quote(text: str, safe: str = "") -> str:
    return urllib.parse.quote(text, safe=UNRESERVED + safe)


def _amz_date(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def iso_utc(moment: dt.datetime) -> str:
    """The form S3 takes for retain-until dates."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class S3Client:
    """One bucket on one endpoint; one connection, reopened after an error."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        credentials: Credentials,
        region: str = "",
        ca_file: str = "",
        now: Callable[[], float] = time.time,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise GatewayError(f"{endpoint!r} is not an http:// or https:// URL")
        self.scheme = url.scheme
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        default_port = (url.scheme == "https" and self.port == 443) or (
            url.scheme == "http" and self.port == 80
        )
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.base_path = url.path.rstrip("/")
        self.bucket = bucket
        self.credentials = credentials
        self.region = region or DEFAULT_REGION
        self.context: ssl.SSLContext | None = None
        if self.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca_file or None)
        self.now = now
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0
        self.bytes_sent = 0

    # ---- signing and transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.context is not None:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=SOCKET_TIMEOUT_S, context=self.context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=SOCKET_TIMEOUT_S
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sign(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], sha: str
    ) -> None:
        t = self.now()
        amz_date = _amz_date(t)
        day = amz_date[:8]
        headers["host"] = self.host_header
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = sha
        canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        names = sorted(h.lower() for h in headers)
        lowered = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        canonical_headers = "".join(f"{n}:{lowered[n]}\n" for n in names)
        signed = ";".join(names)
        canonical = "\n".join(
            [method, _quote(path, "/"), canonical_query, canonical_headers, signed, sha]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.credentials.secret_access_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )

    def request(
        self,
        method: str,
        key: str = "",
        query: dict[str, str] | None = None,
        body: bytes | Path = b"",
        headers: dict[str, str] | None = None,
        pace: Callable[[int], None] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, dict[str, str], bytes]:
        """One signed request; S3Error for an error answer, S3Unavailable for no answer.

        `pace(n)` is called before each piece of the body is sent (the bandwidth bound).
        A Path body is read from its file in pieces (a 64 MiB segment is never in memory).
        """
        query = dict(query or {})
        headers = dict(headers or {})
        path = f"{self.base_path}/{self.bucket}" + (f"/{key}" if key else "")
        sha, _md5, size = digests(body)
        self._sign(method, path, query, headers, sha)
        headers["content-length"] = str(size)
        url = _quote(path, "/")
        if query:
            url += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        # A kept-alive connection the store has closed meanwhile fails on its
        # first use: that request is sent once more on a new connection. (Had
        # the store taken it whole before closing, the second PUT adds an
        # identical version, which the verifier counts as one.)
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                status, answer_headers, data, reason, closing = self._exchange(
                    conn, method, url, headers, body, pace
                )
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    continue
                raise S3Unavailable(f"{self.scheme}://{self.host_header}: {exc}") from exc
        self.requests += 1
        if closing:
            self.close()
        if status not in ok:
            code, message = str(status), reason
            if data:
                try:
                    root = ET.fromstring(data)
                    code = root.findtext("Code") or code
                    message = root.findtext("Message") or message
                except ET.ParseError:
                    pass
            raise S3Error(status, code, message, key)
        return status, answer_headers, data

    def _exchange(self, conn, method, url, headers, body, pace):
        conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        for piece in _pieces(body):
            if pace is not None:
                pace(len(piece))
            conn.send(piece)
            self.bytes_sent += len(piece)
        response = conn.getresponse()
        data = response.read()
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, answer_headers, data, response.reason, response.will_close

    # ---- bucket

    def create_bucket(self, object_lock: bool = True) -> None:
        """Create the bucket with Object Lock on (it cannot be turned on later on every store)."""
        headers = {"x-amz-bucket-object-lock-enabled": "true"} if object_lock else {}
        body = b""
        if self.region != DEFAULT_REGION:
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{self.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        self.request("PUT", body=body, headers=headers)

    # ---- objects

    def put_object(
        self,
        key: str,
        body: bytes | Path,
        *,
        lock_mode: str = "",
        retain_until: dt.datetime | None = None,
        content_type: str = "application/octet-stream",
        pace: Callable[[int], None] | None = None,
    ) -> str:
        """One PUT with Content-MD5 (and a lock when asked); returns the version id ('' if none)."""
        _sha, md5, _size = digests(body)
        headers = {
            "content-md5": base64.b64encode(md5).decode(),
            "content-type": content_type,
        }
        if lock_mode:
            assert retain_until is not None
            headers["x-amz-object-lock-mode"] = lock_mode
            headers["x-amz-object-lock-retain-until-date"] = iso_utc(retain_until)
        _status, answer, _data = self.request("PUT", key, body=body, headers=headers, pace=pace)
        etag = answer.get("etag", "").strip('"')
        if etag and "-" not in etag and etag != md5.hex():
            raise S3Error(200, "BadDigest", f"the store's ETag {etag} is not our MD5", key)
        return answer.get("x-amz-version-id", "")

    def get_object(self, key: str, version_id: str = "") -> bytes:
        query = {"versionId": version_id} if version_id else {}
        return self.request("GET", key, query)[2]

    def delete_object(self, key: str, version_id: str = "") -> None:
        query = {"versionId": version_id} if version_id else {}
        self.request("DELETE", key, query, ok=(200, 204))

    def get_retention(self, key: str, version_id: str) -> tuple[str, dt.datetime | None]:
        """(mode, retain-until) of one version; ('', None) when it has no retention."""
        try:
            data = self.request("GET", key, {"retention": "", "versionId": version_id})[2]
        except S3Error as exc:
            if exc.code in NO_RETENTION_CODES:
                return "", None
            raise
        root = ET.fromstring(data)
        mode = _find(root, "Mode")
        until = _find(root, "RetainUntilDate")
        return mode, parse_iso(until) if until else None

    def put_retention(
        self, key: str, version_id: str, mode: str, until: dt.datetime, bypass: bool = False
    ) -> None:
        body = (
            '<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Mode>{mode}</Mode><RetainUntilDate>{iso_utc(until)}</RetainUntilDate></Retention>"
        ).encode()
        headers = {"content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
        if bypass:
            headers["x-amz-bypass-governance-retention"] = "true"
        self.request(
            "PUT", key, {"retention": "", "versionId": version_id}, body=body, headers=headers
        )

    def list_versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """Every version and delete marker under `prefix`, key by key (newest first per key)."""
        key_marker = version_marker = ""
        while True:
            query = {"versions": "", "prefix": prefix, "max-keys": str(LIST_PAGE)}
            if key_marker:
                query["key-marker"] = key_marker
                query["version-id-marker"] = version_marker
            root = ET.fromstring(self.request("GET", query=query)[2])
            for child in root:
                tag = child.tag.removeprefix(NS)
                if tag not in ("Version", "DeleteMarker"):
                    continue
                yield ObjectVersion(
                    key=_find(child, "Key"),
                    version_id=_find(child, "VersionId"),
                    is_latest=_find(child, "IsLatest") == "true",
                    size=int(_find(child, "Size") or 0),
                    etag=_find(child, "ETag").strip('"'),
                    last_modified=_find(child, "LastModified"),
                    delete_marker=tag == "DeleteMarker",
                )
            if _find(root, "IsTruncated") != "true":
                return
            key_marker = _find(root, "NextKeyMarker")
            version_marker = _find(root, "NextVersionIdMarker")
            if not key_marker:
                return

    def list_prefixes(self, prefix: str = "", delimiter: str = "/") -> list[str]:
        """The common prefixes one level below `prefix` (the boxes in a bucket)."""
        found: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix, "delimiter": delimiter}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.request("GET", query=query)[2])
            for cp in root.iter(NS + "CommonPrefixes"):
                found.append(_find(cp, "Prefix"))
            token = _find(root, "NextContinuationToken")
            if _find(root, "IsTruncated") != "true" or not token:
                return found


def _pieces(body: bytes | Path) -> Iterator[bytes | memoryview]:
    """The body in SEND_CHUNK_BYTES pieces; each is valid until the next is asked for.

    A file is read into one buffer for the whole body rather than a new bytes
    object per piece: thousands of same-sized short-lived allocations between
    the thread's small lasting ones leave the thread's malloc arena full of
    holes a little too small for the next piece (docs/fleet.md, "Memory").
    """
    if isinstance(body, Path):
        buffer = memoryview(bytearray(SEND_CHUNK_BYTES))
        with open(body, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                yield buffer[:n]
        return
    view = memoryview(body)
    for start in range(0, len(body), SEND_CHUNK_BYTES):
        yield view[start : start + SEND_CHUNK_BYTES]


def digests(body: bytes | Path) -> tuple[str, bytes, int]:
    """(SHA-256 hex, MD5 digest, size) of a body, a file read in pieces."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    for piece in _pieces(body):
        sha.update(piece)
        md5.update(piece)
        size += len(piece)
    return sha.hexdigest(), md5.digest(), size


def _find(element: ET.Element, name: str) -> str:
    """Text of a child, with or without S3's namespace ('' when absent)."""
    for candidate in (NS + name, name):
        found = element.find(candidate)
        if found is not None:
            return found.text or ""
    return ""
