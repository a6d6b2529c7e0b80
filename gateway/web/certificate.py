"""The console's HTTPS certificate: the configured one, else one made here at first start.

The gateway has one certificate model: `ingest.tls.cert` and `ingest.tls.key`
when configured; otherwise, for `web.tls_listen`, a self-signed certificate
and key made once in `<state_dir>/web-tls/` by the `openssl` command (Debian's
openssl package) and kept across restarts, so its fingerprint stays the one a
visitor compared. The fingerprint (SHA-256 of the certificate) is shown on the
dashboard and in `gateway status`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

from gateway.errors import ConfigError
from gateway.statedir import make_durable_dirs

CERT_DIR = "web-tls"
# Ten years: the box runs unattended for years, and a visitor checks the
# fingerprint rather than a CA, so expiry would only break the page.
DAYS = 3650
# Making an EC key and signing takes milliseconds; a minute means openssl hangs.
OPENSSL_TIMEOUT_S = 60


def fingerprint(cert_path: str | Path) -> str:
    """SHA-256 of the first certificate in a PEM file, as colon-separated hex ('' if none)."""
    try:
        pem = Path(cert_path).read_text(encoding="ascii")
        begin = pem.index("-----BEGIN CERTIFICATE-----")
        end = pem.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
        der = ssl.PEM_cert_to_DER_cert(pem[begin:end])
    except (OSError, ValueError):
        return ""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def self_signed(state_dir: Path, source: str = "-") -> tuple[str, str]:
    """(cert, key) under <state_dir>/web-tls, made now if they do not exist yet."""
    directory = state_dir / CERT_DIR
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return str(cert), str(key)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError(
            source,
            "web.tls_listen",
            "no ingest.tls cert and key, and no openssl command to make a self-signed "
            "certificate (apt-get install openssl)",
        )
    make_durable_dirs(directory)
    os.chmod(directory, 0o700)
    name = socket.gethostname() or "print-gateway"
    tmp_cert, tmp_key = directory / "cert.pem.tmp", directory / "key.pem.tmp"
    try:
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                str(DAYS),
                "-subj",
                f"/CN={name}",
                "-addext",
                f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(tmp_key),
                "-out",
                str(tmp_cert),
            ],
            check=True,
            capture_output=True,
            timeout=OPENSSL_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            source, "web.tls_listen", f"making a self-signed certificate failed: {exc}"
        ) from None
    os.chmod(tmp_key, 0o600)
    os.replace(tmp_key, key)  # the key first: a cert without its key is never left behind
    os.replace(tmp_cert, cert)
    return str(cert), str(key)
