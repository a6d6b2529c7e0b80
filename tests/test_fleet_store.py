"""The S3 client against a real Ceph RGW with Object Lock (tests/cephrgw.py).

What the replication relies on, shown on the store itself: a single PUT with
a COMPLIANCE lock and Content-MD5 yields a locked version; a delete of that
version and a shortening of its retention are refused; a plain delete only
adds a delete marker and the version stays readable; a body that does not
match its Content-MD5 is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

from gateway.fleet.s3 import S3Client, S3Error

pytestmark = pytest.mark.fleet


def test_fixture_starts_quickly(ceph):
    # Measured 2-4 s on 2 shared cores; the bound only catches a broken start.
    assert ceph.timing["ready_s"] < 60, ceph.timing
    assert ceph.rss_kib() > 0


def test_compliance_lock_holds(ceph, bucket: S3Client):
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    body = b"segment bytes " * 1000
    version = bucket.put_object("b1/segments/x.seg", body, lock_mode="COMPLIANCE",
                                retain_until=until)  # fmt: skip
    assert version
    mode, retain = bucket.get_retention("b1/segments/x.seg", version)
    assert mode == "COMPLIANCE"
    assert retain is not None and abs((retain - until).total_seconds()) < 2
    with pytest.raises(S3Error) as refused:
        bucket.delete_object("b1/segments/x.seg", version)
    assert refused.value.status == 403
    with pytest.raises(S3Error) as refused:
        bucket.put_retention("b1/segments/x.seg", version, "COMPLIANCE",
                             until - dt.timedelta(hours=1), bypass=True)  # fmt: skip
    assert refused.value.status == 403
    with pytest.raises(S3Error):
        bucket.put_retention("b1/segments/x.seg", version, "GOVERNANCE", until, bypass=True)
    # Extending is allowed.
    bucket.put_retention("b1/segments/x.seg", version, "COMPLIANCE", until + dt.timedelta(days=1))
    # A plain delete adds a marker; the locked version stays readable by id.
    bucket.delete_object("b1/segments/x.seg")
    versions = list(bucket.list_versions("b1/segments/x.seg"))
    assert [v.delete_marker for v in versions] == [True, False]
    assert bucket.get_object("b1/segments/x.seg", version) == body


def test_unlocked_put_has_no_retention(bucket: S3Client):
    version = bucket.put_object("b1/plain", b"x")
    assert bucket.get_retention("b1/plain", version) == ("", None)


def test_wrong_content_md5_is_refused(bucket: S3Client):
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(S3Error) as refused:
        bucket.request("PUT", "b1/bad", body=b"body", headers={"content-md5": bad})
    assert refused.value.code in ("BadDigest", "InvalidDigest")


def test_bad_secret_is_refused(ceph):
    from gateway.fleet.s3 import Credentials

    client = S3Client(ceph.endpoint, "nosuch", Credentials(ceph.access_key, "wrong"))
    try:
        with pytest.raises(S3Error) as refused:
            list(client.list_versions())
        assert refused.value.status == 403
    finally:
        client.close()
