"""The S3 client's pure parts: SigV4 against AWS's published example, credentials parsing."""

from __future__ import annotations

import calendar
import hashlib
import time

import pytest

from gateway.errors import GatewayError
from gateway.fleet.s3 import Credentials, S3Client, digests, load_credentials


def test_signature_matches_the_aws_sigv4_example():
    # AWS S3 documentation, "Signature Calculations for the Authorization
    # Header", example "GET Object": these inputs sign to this signature.
    when = calendar.timegm(time.strptime("20130524T000000Z", "%Y%m%dT%H%M%SZ"))
    client = S3Client(
        "https://examplebucket.s3.amazonaws.com",
        "examplebucket",
        Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        now=lambda: when,
    )
    headers = {"range": "bytes=0-9"}
    client._sign("GET", "/test.txt", {}, headers, hashlib.sha256(b"").hexdigest())
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_credentials_file_is_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("access_key_id: a\nsecret_access_key: b\n")
    creds = load_credentials(path)
    assert creds.access_key_id == "a" and "b" not in repr(creds)
    for bad in ("access_key_id: a\n", "[1]\n", "access_key_id: a\nsecret_access_key: b\nx: 1\n"):
        path.write_text(bad)
        with pytest.raises(GatewayError):
            load_credentials(path)
    with pytest.raises(GatewayError):
        load_credentials(tmp_path / "missing.yaml")


def test_a_file_body_hashes_as_its_bytes(tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "body"
    path.write_bytes(data)
    assert digests(path) == digests(data)
    assert digests(data)[1] == hashlib.md5(data).digest()


@pytest.mark.parametrize(
    ("fleet", "key"),
    [
        ({"endpoint": "ftp://x", "bucket": "abc", "credentials_file": "/c"}, "fleet.endpoint"),
        ({"endpoint": "http://h/path", "bucket": "abc", "credentials_file": "/c"},
         "fleet.endpoint"),
        ({"endpoint": "http://h:9000", "bucket": "A_B", "credentials_file": "/c"},
         "fleet.bucket"),
        ({"endpoint": "http://h:9000", "bucket": "abc"}, "fleet.credentials_file"),
        ({"endpoint": "http://h", "bucket": "abc", "credentials_file": "/c", "retain_days": 0},
         "fleet.retain_days"),
        ({"seal_after_s": 10}, "fleet.seal_after_s"),
    ],
)  # fmt: skip
def test_fleet_configuration_is_refused_with_its_key(tmp_path, fleet, key):
    import yaml

    from gateway.config import load_config
    from gateway.errors import ConfigError

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"fleet": fleet}))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.key == key and refused.value.file == str(path)


def test_fleet_is_off_by_default_and_parsed_when_on(tmp_path):
    import yaml

    from gateway.config import load_config

    assert not load_config(None, tmp_path).fleet.enabled
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"fleet": {"endpoint": "https://s3.example", "bucket": "b-1",
                                              "credentials_file": "/etc/s3.yaml"}}))  # fmt: skip
    fleet = load_config(path).fleet
    assert (
        fleet.enabled
        and fleet.retain_days == 2555
        and str(fleet.credentials_file) == ("/etc/s3.yaml")
    )
