"""A real S3 server with Object Lock for the fleet tests: a throwaway one-node Ceph.

One monitor, one OSD on the in-memory `memstore` object store and one radosgw
(beast front-end), all bound to 127.0.0.1, all under one temporary directory,
each a child process of the test run whose PID is kept here. Nothing is
installed as a service and nothing outside the directory is touched.

Needs Debian 12's `ceph-mon`, `ceph-osd`, `radosgw` and `ceph-common` (Ceph
16.2.15): `make test-fleet` installs them when run as root. Without them the
fleet tests fail (CephMissing), they never skip.

Facts this relies on, found on a 2-core machine of the kind CI uses:

- With `auth = none` radosgw cannot reach the monitor unless the client mode
  also offers crc (`ms mon client mode = crc secure`): radosgw asks for
  "secure" alone by default, which auth none cannot give.
- radosgw creates its pools at first start, one Paxos round each; with the
  default 1 s proposal interval that takes ~9 s, with 50 ms about 2 s.
- One OSD: pools of size 1 (`mon allow pool size one`), 8 PGs each, and room
  for rgw's many pools (`mon max pg per osd = 1000`). The OSD binds ports in
  6800-7300 even on loopback.
- Ceph 16.2.15 ignores Object Lock headers on multipart uploads and on
  CopyObject; the gateway therefore uploads each object in one PUT and reads
  each version's retention back (tests check the same).
- A killed daemon lingers as a zombie for a moment: a zombie counts as dead.

Usage from a shell, for a store to try things against:
    python tests/cephrgw.py start DIR   (prints S3_ENDPOINT=..., keys; DIR/env)
    python tests/cephrgw.py stop DIR
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REQUIRED = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
# The monitor answers within ~1 s of being started; 30 s covers a loaded CI machine.
MON_TIMEOUT_S = 30.0
# The OSD is up ~1 s after mkfs on memstore; 60 s for a loaded machine.
OSD_TIMEOUT_S = 60.0
# radosgw serves HTTP 2-4 s after start (pool creation); 120 s for a loaded machine.
RGW_TIMEOUT_S = 120.0
# Each bounded wait polls this often.
POLL_S = 0.1
# A SIGKILLed daemon is reaped within ~2 s here; 10 s before giving up on it.
KILL_TIMEOUT_S = 10.0
# One ceph CLI call (osd new, user create) returns in under a second.
CLI_TIMEOUT_S = 60.0
# The memstore OSD's capacity (held in RAM): 2 GiB is far more than the test
# suite writes; bench/fleet.py asks for more (a native-path ingest round with
# replication puts ~0.5 GB).
MEMSTORE_BYTES = 2 * 1024**3
ACCESS_KEY = "fleettestaccess"
SECRET_KEY = "fleettestsecretkey0123456789"


class CephMissing(AssertionError):
    """The Ceph packages are not installed: the fleet suite fails, it does not skip."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_tools() -> list[str]:
    return [t for t in REQUIRED if shutil.which(t) is None and not Path("/usr/bin", t).exists()]


def _conf(d: Path, mon_port: int, rgw_port: int, fsid: str, memstore_bytes: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port}]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms mon client mode = crc secure
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
crash dir = {d}/crash
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
paxos propose interval = 0.05
paxos min wait = 0.01
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd op num shards = 1
osd op num threads per shard = 2
osd max object size = 134217728
osd check max object name len on startup = false

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {d}/rgw
rgw thread pool size = 32
rgw enable usage log = false
rgw dns name = 127.0.0.1
rgw zone = default
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(deadline_s: float, what: str, check) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"ceph fixture: timed out waiting for {what}")


class CephRGW:
    """One throwaway Ceph cluster with radosgw under `directory` (which must not exist)."""

    def __init__(self, directory: Path, memstore_bytes: int = MEMSTORE_BYTES) -> None:
        self.dir = Path(directory).absolute()
        self.memstore_bytes = memstore_bytes
        self.conf = self.dir / "ceph.conf"
        self.rgw_port = 0
        self.procs: dict[str, subprocess.Popen] = {}
        self.timing: dict[str, float] = {}
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rgw_port}"

    def _ceph(self, *args: str) -> str:
        out = subprocess.run(
            ["ceph", "-c", str(self.conf), "--connect-timeout", "5", *args],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=True,
        )
        return out.stdout

    def _daemon(self, name: str, *argv: str) -> None:
        log = open(self.dir / "log" / f"{name}.out", "wb")  # noqa: SIM115 (kept by Popen)
        self.procs[name] = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        (self.dir / "pids" / name).write_text(str(self.procs[name].pid))

    def start(self) -> str:
        missing = missing_tools()
        if missing:
            raise CephMissing(
                "the fleet tests need a real S3 server: Ceph is not installed "
                f"(missing {', '.join(missing)}); as root: apt-get install -y "
                "--no-install-recommends ceph-mon ceph-osd radosgw ceph-common "
                "(`make test-fleet` does so)"
            )
        t0 = time.monotonic()
        for sub in ("mon/ceph-a", "osd/ceph-0", "run", "log", "pids", "rgw"):
            (self.dir / sub).mkdir(parents=True)
        mon_port = free_port()
        self.rgw_port = free_port()
        fsid = str(uuid.uuid4())
        self.conf.write_text(_conf(self.dir, mon_port, self.rgw_port, fsid, self.memstore_bytes))
        (self.dir / "keyring").write_text("")
        c = ["-c", str(self.conf)]
        monmap = str(self.dir / "monmap")
        subprocess.run(
            ["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
             f"[v2:127.0.0.1:{mon_port}]", monmap],
            check=True, capture_output=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        subprocess.run(
            ["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap],
            check=True, capture_output=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        self._daemon("mon.a", "ceph-mon", *c, "-f", "-i", "a")

        def mon_up() -> bool:
            try:
                self._ceph("mon", "stat")
                return True
            except (subprocess.SubprocessError, OSError):
                return False

        _wait(MON_TIMEOUT_S, "the monitor", mon_up)
        self.timing["mon_s"] = time.monotonic() - t0
        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid).strip()
        subprocess.run(
            ["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid],
            check=True, capture_output=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        self._daemon(f"osd.{osd_id}", "ceph-osd", *c, "-f", "-i", osd_id)

        def osd_up() -> bool:
            try:
                dump = json.loads(self._ceph("osd", "dump", "--format", "json"))
            except (subprocess.SubprocessError, OSError, ValueError):
                return False
            return any(o["osd"] == int(osd_id) and o["up"] for o in dump.get("osds", []))

        _wait(OSD_TIMEOUT_S, "the OSD", osd_up)
        self.timing["osd_s"] = time.monotonic() - t0
        self.start_rgw()
        self.timing["rgw_s"] = time.monotonic() - t0
        subprocess.run(
            ["radosgw-admin", *c, "user", "create", "--uid=fleet", "--display-name=fleet",
             f"--access-key={self.access_key}", f"--secret={self.secret_key}"],
            check=True, capture_output=True, timeout=CLI_TIMEOUT_S,
        )  # fmt: skip
        self.timing["ready_s"] = time.monotonic() - t0
        (self.dir / "env").write_text(
            f"S3_ENDPOINT={self.endpoint}\nS3_ACCESS_KEY={self.access_key}\n"
            f"S3_SECRET_KEY={self.secret_key}\n"
        )
        return self.endpoint

    def _http_ok(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answers: that is all we ask
        except OSError:
            return False

    def start_rgw(self) -> None:
        """Start (or restart after stop_rgw) radosgw and wait until it answers HTTP."""
        self._daemon("rgw.a", "radosgw", "-c", str(self.conf), "-f", "-n", "client.rgw.a")
        _wait(RGW_TIMEOUT_S, "radosgw to answer HTTP", self._http_ok)

    def stop_rgw(self) -> None:
        """Kill radosgw alone (an outage of the store); the cluster keeps its data."""
        self._kill(["rgw.a"])

    def rss_kib(self) -> int:
        total = 0
        for proc in self.procs.values():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def _kill(self, names: list[str]) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and _alive(proc.pid):
                proc.send_signal(signal.SIGKILL)
        for name in names:
            proc = self.procs.pop(name, None)
            if proc is not None:
                try:
                    proc.wait(timeout=KILL_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass

    def stop(self) -> None:
        """Kill every daemon (the cluster is throwaway) and remove the directory."""
        self._kill([n for n in self.procs if not n.startswith("mon")])
        self._kill(list(self.procs))
        shutil.rmtree(self.dir, ignore_errors=True)


def _stop_dir(directory: Path) -> None:
    """Stop daemons recorded in DIR/pids by a `start` from the shell."""
    conf = str(directory.absolute() / "ceph.conf")
    for pidfile in sorted((directory / "pids").glob("*"), key=lambda p: p.name.startswith("mon")):
        pid = int(pidfile.read_text())
        try:
            if conf.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: cephrgw.py start|stop DIR")
    where = Path(sys.argv[2])
    if sys.argv[1] == "stop":
        _stop_dir(where)
    else:
        store = CephRGW(where)
        store.start()
        print((where / "env").read_text(), end="")
        # The daemons must outlive this script: they were started in its
        # session, so detach by exiting without waiting (they are re-parented).
        os._exit(0)
