"""Configuration: one YAML file parsed once into frozen dataclasses.

Every key is optional; the defaults below are the documented ones (README,
"Configuration"). Unknown keys and bad values are refused with the file, the
key and the reason. Nothing else in the gateway reads YAML.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from blake3 import blake3

from gateway.errors import ConfigError

MiB = 1024 * 1024

# An app may hold two tokens at once: the new one is added, the apps move to
# it, the old one is removed, without a moment where either is refused.
MAX_TOKENS_PER_APP = 2


def token_list(secrets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """An app's tokens as a tuple (configuration gives a tuple; code may pass a string)."""
    return (secrets,) if isinstance(secrets, str) else tuple(secrets)


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (as YAML 1.2 has it).

    YAML 1.1 reads an unquoted `off`, `on`, `yes` or `no` as a boolean, so
    `fsync: off` would arrive as False: in this file they stay strings.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _limit(lo: float | None = None, hi: float | None = None, doc: str = "") -> dict[str, Any]:
    return {"min": lo, "max": hi, "doc": doc}


@dataclass(frozen=True)
class TlsConfig:
    # Its own listeners (empty: no TLS). Plain `listen` stays as it is.
    listen: tuple[str, ...] = ()
    cert: str = ""  # PEM certificate (chain)
    key: str = ""  # PEM private key
    # PEM CA bundle: when set, clients must present a certificate it signed,
    # and the certificate's common name is the app name (authenticated).
    client_ca: str = ""
    # A TLS handshake not finished in 10 s is dropped (a slow client on a LAN
    # finishes in milliseconds; this bounds what a stalled one holds).
    handshake_timeout_s: float = field(default=10.0, metadata=_limit(0.1, 300))


@dataclass(frozen=True)
class HttpConfig:
    # HTTP ingest (`POST /v1/events`, docs/protocol.md "HTTP"): HOST:PORT lists
    # for plain HTTP and for HTTPS (with ingest.tls's cert and key); empty: off.
    listen: tuple[str, ...] = ()
    tls_listen: tuple[str, ...] = ()
    # 8 MiB: thousands of events per request, while a request's body is held
    # in memory whole until it ends; 64 MiB is the ceiling for the same reason.
    max_body_bytes: int = field(default=8 * MiB, metadata=_limit(1024, 64 * MiB))
    # A request head (request line and headers) must be complete within 10 s:
    # a client on a LAN sends it in one packet; this bounds slow drips.
    header_timeout_s: float = field(default=10.0, metadata=_limit(0.1, 300))


@dataclass(frozen=True)
class SyslogConfig:
    # HOST:PORT listeners for RFC 5424 syslog over TCP (docs/syslog.md). Empty,
    # the default: syslog carries no token, so it is on only where asked for.
    # Messages are bounded by ingest.max_line_bytes like NDJSON lines, and the
    # allow list, connection caps and rate limits of `ingest` apply too.
    listen: tuple[str, ...] = ()


@dataclass(frozen=True)
class DedupConfig:
    # Idempotent sends with `event_id` (docs/protocol.md "Exactly once with
    # event_id"): an id is remembered for `window_s` after it came (24 hours:
    # a sender's outbox retries within minutes; a day also covers a night's
    # outage of the gateway or of the sender's cron) and among the newest
    # `max_ids` (1,000,000 ids take 32.4 MB at 32.4 bytes each, gateway/ingest/
    # dedup.py: about 3 % of a 1 GB Pi; 0 turns deduplication off). 16,000,000
    # is the ceiling: 518 MB.
    window_s: float = field(default=86_400.0, metadata=_limit(60, 30 * 86_400))
    max_ids: int = field(default=1_000_000, metadata=_limit(0, 16_000_000))
    # The table is saved to the state directory at most this often while ids
    # come (and at every clean stop); after a crash the start catches up from
    # the last save by reading the ledger. Ten minutes: at 1,000 ids/s a save
    # (32 MiB when full) adds about a sixth to the ledger's own flash writes.
    save_interval_s: float = field(default=600.0, metadata=_limit(10, 86_400))


@dataclass(frozen=True)
class IngestConfig:
    # Loopback only by default: `make run` must not expose a port to the LAN.
    listen: tuple[str, ...] = field(default=("127.0.0.1:50001",), metadata={"nonempty": True})
    # 64 KiB holds any realistic event (audit records with old/new values are a
    # few KiB); 8 MiB is the ceiling because a line is buffered whole in memory.
    max_line_bytes: int = field(default=65536, metadata=_limit(256, 8 * MiB))
    # 512 apps at a branch office is generous; each costs one fd and ~2 KiB.
    max_connections: int = field(default=512, metadata=_limit(1, 100_000))
    # Five minutes: long enough for a persistent client's quiet spells, short
    # enough that abandoned connections do not pile up.
    idle_timeout_s: float = field(default=300.0, metadata=_limit(1, 86_400))
    # Who may connect: loopback and the private ranges (a branch office LAN);
    # anything else is closed at accept.
    allow: tuple[str, ...] = (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
    # Per-app secrets: a hello naming an app listed here must carry its token.
    # One secret, or a list of up to MAX_TOKENS_PER_APP while one is rotated in.
    tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # true: every connection must start with a hello whose token checks.
    require_token: bool = False
    # Per source address (0: unlimited, the default, so that benchmarks from one
    # address measure the gateway): open connections, and events per second
    # (a token bucket holding `rate_burst` events; 0: one second's worth).
    max_connections_per_source: int = field(default=0, metadata=_limit(0, 100_000))
    rate_limit_eps: float = field(default=0.0, metadata=_limit(0, 1_000_000))
    rate_burst: int = field(default=0, metadata=_limit(0, 10_000_000))
    tls: TlsConfig = TlsConfig()
    http: HttpConfig = HttpConfig()
    syslog: SyslogConfig = SyslogConfig()
    dedup: DedupConfig = DedupConfig()


@dataclass(frozen=True)
class LedgerConfig:
    # batch: group commit (one fdatasync per batch); always: one fdatasync per
    # entry (for comparison); off: no fdatasync at all (benchmarks only).
    fsync: Literal["batch", "always", "off"] = "batch"
    # 64 MiB segments: start-up recovery reads only the last one, so this bounds
    # start-up time; large enough that a year of events is a few hundred files.
    segment_bytes: int = field(default=64 * MiB, metadata=_limit(64 * 1024, 1024 * MiB))
    # Below this much free space on the state filesystem, new events are refused
    # (disk_full) so that system entries, outcomes and recovery still have room:
    # 256 MiB is four segments' worth at the default size.
    min_free_bytes: int = field(default=256 * MiB, metadata=_limit(0, 1 << 40))
    # At most one sync per this many milliseconds: a commit waits until this
    # long after the previous one started. 0 (default): commit as soon as the
    # previous sync is done, the lowest latency. Raising it trades latency (each
    # acknowledgement may wait that long; a client that waits for each ack gets
    # at most 1000/N of them per second) for fewer, larger writes: each sync
    # rewrites the last, partly filled 4 KiB page, so at 1,000 events/s a sync
    # per event writes ~12 times the ledger's growth (bench/RESULTS.md).
    min_sync_interval_ms: float = field(default=0.0, metadata=_limit(0, 1000))


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class PrinterConfig:
    # socket://HOST:PORT[?contimeout=S&waiteof=true|false], serial:DEVICE[?baud=...],
    # or file:DIRECTORY (docs/printing.md, "Printers").
    uri: str
    # A name in gateway/render/languages.py LANGUAGES (text, escpos, pcl).
    language: str = "text"
    # 42 characters: an 80 mm receipt roll in the printer's standard font.
    width: int = field(default=42, metadata=_limit(16, 255))


@dataclass(frozen=True)
class RouteConfig:
    # Equality on top-level event fields; empty: every event.
    match: dict[str, Any] = field(default_factory=dict)
    printer: tuple[str, ...] = ()  # required: one name or a list (fan-out)
    template: Literal["receipt"] = "receipt"


@dataclass(frozen=True)
class DailyReportConfig:
    printer: str = ""  # required
    at: str = "02:00"  # local time HH:MM; the report covers the previous day


@dataclass(frozen=True)
class ReportsConfig:
    daily: DailyReportConfig | None = None


@dataclass(frozen=True)
class SpoolConfig:
    # Retry a failed delivery after 1 s, doubling up to 60 s: quick recovery
    # from a printer's brief hiccup, one attempt a minute during a long outage.
    retry_start_s: float = field(default=1.0, metadata=_limit(0.01, 3600))
    retry_cap_s: float = field(default=60.0, metadata=_limit(0.01, 3600))
    # A printer in error this long raises an alert (ERROR log, status health).
    alert_after_s: float = field(default=300.0, metadata=_limit(1, 86_400))
    # Per printer: 10,000 queued jobs (days of receipts at a branch) and 64 MiB
    # of queued entry data; beyond either, new jobs are refused and recorded.
    max_jobs: int = field(default=10_000, metadata=_limit(1, 1_000_000))
    max_bytes: int = field(default=64 * MiB, metadata=_limit(MiB, 1024 * MiB))
    # A delivery that makes no progress for 60 s (printer stopped reading,
    # serial flow control never released) is abandoned and retried.
    stall_timeout_s: float = field(default=60.0, metadata=_limit(0.1, 3600))


@dataclass(frozen=True)
class ButtonConfig:
    # An input device path (/dev/input/event0, or a FIFO of evdev records), or a
    # device name looked up under /dev/input; empty: no button.
    device: str = ""
    # 210 is KEY_PRINT, what the gpio-key overlay line in the README sets.
    keycode: int = field(default=210, metadata=_limit(1, 767))
    # Released before 3 s: reprint the last receipt; held 3 s or more: status page.
    long_press_s: float = field(default=3.0, metadata=_limit(0.5, 60))


@dataclass(frozen=True)
class LedsConfig:
    # An LED class directory such as /sys/class/leds/gw-status; empty: no LED.
    status: str = ""


@dataclass(frozen=True)
class BoardConfig:
    button: ButtonConfig = ButtonConfig()
    leds: LedsConfig = LedsConfig()
    # Development: create <state_dir>/board/button (a FIFO) and
    # <state_dir>/board/leds/gw-status (an LED-shaped directory) and use them.
    fake: bool = False


@dataclass(frozen=True)
class ClockConfig:
    # Ask the kernel (adjtimex) whether the clock is synchronised; while it is
    # not, entries are flagged clock_unsynced and the daily report waits.
    check_sync: bool = True


@dataclass(frozen=True)
class RedactConfig:
    # Keys whose values are replaced before anything is stored: case-insensitive
    # names or globs (docs/protocol.md, "Redaction").
    keys: tuple[str, ...] = (
        "*password*",
        "*passwd*",
        "*secret*",
        "*api_key*",
        "*token",
        "authorization",
        "card_number",
        "cvv",
        "cvc",
    )
    # Payment card numbers (13-19 digits, Luhn-valid) in any string keep their last 4 digits.
    cards: bool = True
    # Markers carry a keyed BLAKE3 of the removed value (key: <state_dir>/redact.key).
    digest: bool = False


@dataclass(frozen=True)
class IndexConfig:
    # The query index (<state_dir>/index.sqlite3), kept up to date by a thread
    # of the gateway; queries work without it, reading the ledger instead.
    enabled: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    # HOST:PORT of the read-only Prometheus listener; empty: off.
    listen: str = ""


@dataclass(frozen=True)
class WebConfig:
    # The web console (docs/web.md): HOST:PORT lists for HTTP and for HTTPS
    # (with ingest.tls's cert and key, else a self-signed certificate made at
    # first start in <state_dir>/web-tls). Empty, the default in files: off.
    # `make run`'s embedded defaults serve 127.0.0.1:8080.
    listen: tuple[str, ...] = ()
    tls_listen: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionConfig:
    # Where closed segments are copied, gzip-compressed (docs/ledger-format.md,
    # "Retention"); it must exist. None: nothing is archived.
    archive_dir: Path | None = None
    # A closed segment is archived once its last entry is this many days old:
    # 1 day gives the copy soon after the segment fills; 0 archives at once;
    # 36,500 (a century) is the ceiling of every day count here.
    archive_after_days: int = field(default=1, metadata=_limit(0, 36_500))
    # A closed segment leaves the live ledger once its last entry is this many
    # days old (None: never). At least 2, so that the daily report of the day
    # before, printed from the live ledger, always finds its entries.
    remove_after_days: int | None = field(default=None, metadata=_limit(2, 36_500))
    # Removal needs archive_dir (a segment is removed only once archived and the
    # archive checks); true allows removal without any archive, and only then.
    remove_unarchived: bool = False
    # Ages count in days, so an hourly look costs nothing and delays nothing
    # that matters; 60 s to 1 day.
    check_interval_s: float = field(default=3600.0, metadata=_limit(60, 86_400))

    @property
    def active(self) -> bool:
        return self.archive_dir is not None or self.remove_after_days is not None


@dataclass(frozen=True)
class CheckpointsConfig:
    # A signed checkpoint (docs/fleet.md) is recorded this often while entries
    # arrive, besides one at each segment seal and at a clean stop: 5 minutes
    # bounds what a box can lose unseen to 5 minutes; 10 s to 1 day.
    interval_s: float = field(default=300.0, metadata=_limit(10, 86_400))


@dataclass(frozen=True)
class FleetConfig:
    # Replication of sealed segments and signed checkpoints to S3 Object Lock
    # storage (docs/fleet.md). Off while endpoint is empty.
    endpoint: str = ""  # http:// or https:// URL of the S3 service (path-style)
    bucket: str = ""
    region: str = ""  # empty: us-east-1 (what Ceph RGW and MinIO accept by default)
    # YAML with access_key_id and secret_access_key; readable by the service only.
    credentials_file: Path | None = None
    ca_file: str = ""  # PEM bundle for an https endpoint; empty: the system's
    # Each object is locked in COMPLIANCE mode this many days: 2,555 days is
    # 7 years (SEC 17a-4 and FINRA 4511's six years, plus one); at least 1.
    retain_days: int = field(default=2555, metadata=_limit(1, 36_500))
    # Upload bandwidth in bytes per second; 0: unbounded.
    max_bytes_per_s: int = field(default=0, metadata=_limit(0, 10_000_000_000))
    # A live segment with entries is sealed once it is this old, so that a
    # quiet branch's events leave the box within the hour; 60 s to 1 day.
    seal_after_s: float = field(default=3600.0, metadata=_limit(60, 86_400))
    # Health turns degraded when the oldest unreplicated sealed segment has
    # waited this long: two seal periods plus an hour of outage (3 h).
    max_lag_s: float = field(default=3 * 3600.0, metadata=_limit(60, 30 * 86_400))

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


@dataclass(frozen=True)
class Config:
    state_dir: Path = Path("./var")
    # The gateway's name on paper; empty: the host name.
    name: str = ""
    # The IANA time zone of report days and of every time on paper (docs/audit.md,
    # "Time zones"); empty: the box's zone (/etc/localtime), else UTC.
    timezone: str = ""
    ingest: IngestConfig = IngestConfig()
    ledger: LedgerConfig = LedgerConfig()
    log: LogConfig = LogConfig()
    printers: dict[str, PrinterConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    reports: ReportsConfig = ReportsConfig()
    spool: SpoolConfig = SpoolConfig()
    board: BoardConfig = BoardConfig()
    clock: ClockConfig = ClockConfig()
    redact: RedactConfig = RedactConfig()
    index: IndexConfig = IndexConfig()
    metrics: MetricsConfig = MetricsConfig()
    retention: RetentionConfig = RetentionConfig()
    web: WebConfig = WebConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    fleet: FleetConfig = FleetConfig()
    # Where the configuration came from (a file path, or "<defaults>"); not a YAML key.
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def zone_name(self) -> str:
        """The zone in effect: `timezone`, else the box's."""
        from gateway import zone

        return self.timezone or zone.system_name()

    @property
    def ledger_dir(self) -> Path:
        return self.state_dir / "ledger"

    @property
    def control_path(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def fake_board_dir(self) -> Path:
        return self.state_dir / "board"

    def effective(self) -> dict[str, Any]:
        """The configuration as plain data, for its hash: secrets appear as their BLAKE3."""
        data = _plain(self)
        data.pop("source", None)
        tokens = data["ingest"]["tokens"]
        for app, secrets in tokens.items():
            hashed = ["blake3:" + blake3(s.encode()).hexdigest() for s in token_list(secrets)]
            tokens[app] = hashed[0] if len(hashed) == 1 else hashed
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))
        return blake3(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def default_state_dir() -> Path:
    """$STATE_DIRECTORY under systemd (its first entry), else ./var."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path("./var")


def load_config(path: Path | None = None, state_dir: Path | None = None) -> Config:
    """Read `path` (or take the embedded defaults); `state_dir` overrides the file's."""
    if path is None:
        # Without a file: print every event as a receipt, and the daily report,
        # into files under the state directory (docs/printing.md).
        # And a fake front panel under the state directory (`gateway press-button`).
        state = state_dir or default_state_dir()
        data: Any = {
            "printers": {"paper": {"uri": f"file:{state / 'printed'}"}},
            "routes": [{"printer": "paper"}],
            "reports": {"daily": {"printer": "paper"}},
            "board": {"fake": True},
            # The web console on loopback only (docs/web.md).
            "web": {"listen": ["127.0.0.1:8080"]},
        }
        source = "<defaults>"
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, "-", f"cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, "-", f"not UTF-8 text (byte {exc.start})") from None
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            # Where the parser stopped, as an editor counts (from 1), and what it found.
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "-"
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            reason = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
            raise ConfigError(source, where, reason) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, "-", "the top level must be a mapping")
    if "state_dir" not in data:
        data = {**data, "state_dir": str(default_state_dir())}
    config = _build(Config, data, source, "")
    config = dataclasses.replace(config, source=source)
    if state_dir is not None:
        config = dataclasses.replace(config, state_dir=state_dir)
    for i, address in enumerate(config.ingest.listen):
        parse_address(address, source, f"ingest.listen[{i}]")
    if config.metrics.listen:
        parse_address(config.metrics.listen, source, "metrics.listen")
    tls = config.ingest.tls
    http = config.ingest.http
    for key, addresses in (
        ("ingest.tls.listen", tls.listen),
        ("ingest.http.listen", http.listen),
        ("ingest.http.tls_listen", http.tls_listen),
        ("ingest.syslog.listen", config.ingest.syslog.listen),
        ("web.listen", config.web.listen),
        ("web.tls_listen", config.web.tls_listen),
    ):
        for i, address in enumerate(addresses):
            parse_address(address, source, f"{key}[{i}]")
    if (tls.listen or http.tls_listen) and not (tls.cert and tls.key):
        raise ConfigError(source, "ingest.tls", "a TLS listener needs cert and key")
    if config.ingest.syslog.listen and config.ingest.require_token:
        raise ConfigError(
            source,
            "ingest.syslog.listen",
            "syslog has no hello to carry a token, so it cannot be on with ingest.require_token",
        )
    for i, network in enumerate(config.ingest.allow):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                source, f"ingest.allow[{i}]", f"{network!r} is not a CIDR range"
            ) from None
    for app, secrets in config.ingest.tokens.items():
        if not 0 < len(app) <= 64:
            raise ConfigError(source, f"ingest.tokens.{app}", "app names are 1 to 64 characters")
        if not 1 <= len(token_list(secrets)) <= MAX_TOKENS_PER_APP:
            raise ConfigError(
                source, f"ingest.tokens.{app}", f"1 to {MAX_TOKENS_PER_APP} tokens (two to rotate)"
            )
        for secret in token_list(secrets):
            if not 16 <= len(secret) <= 256:
                raise ConfigError(
                    source,
                    f"ingest.tokens.{app}",
                    "a token is 16 to 256 characters (use a random one)",
                )
    if config.timezone:
        from gateway import zone

        if not zone.valid(config.timezone):
            raise ConfigError(
                source, "timezone", f"{config.timezone!r} is not an IANA time zone name"
            )
    _check_printing(config, source)
    _check_retention(config.retention, source)
    _check_fleet(config.fleet, source)
    return config


def _check_fleet(fleet: FleetConfig, source: str) -> None:
    if not fleet.enabled:
        return
    if not re.fullmatch(r"https?://[^/\s]+/?", fleet.endpoint):
        raise ConfigError(source, "fleet.endpoint", "an http:// or https:// URL with no path")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fleet.bucket):
        raise ConfigError(source, "fleet.bucket", "an S3 bucket name (3-63 of a-z 0-9 . -)")
    if fleet.credentials_file is None:
        raise ConfigError(source, "fleet.credentials_file", "required with fleet.endpoint")


def _check_retention(retention: RetentionConfig, source: str) -> None:
    """Refuse a retention that could remove history without a copy, or by surprise."""
    if retention.remove_unarchived and retention.archive_dir is not None:
        raise ConfigError(
            source,
            "retention.remove_unarchived",
            "only without archive_dir (with an archive, segments are removed once archived)",
        )
    if retention.remove_after_days is None:
        return
    if retention.archive_dir is None and not retention.remove_unarchived:
        raise ConfigError(
            source,
            "retention.remove_after_days",
            "removing segments needs retention.archive_dir (each is archived first), or "
            "retention.remove_unarchived: true to remove them without any copy",
        )
    if retention.archive_dir is not None and retention.remove_after_days < (
        retention.archive_after_days
    ):
        raise ConfigError(
            source,
            "retention.remove_after_days",
            "must not be below retention.archive_after_days (a segment is removed only once "
            "archived)",
        )


def _check_printing(config: Config, source: str) -> None:
    # The registries of printer URI schemes and languages (declared once each).
    from gateway.printing.uri import parse_uri
    from gateway.render.languages import LANGUAGES

    for name, printer in config.printers.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name):
            raise ConfigError(source, f"printers.{name}", "names are 1-32 of A-Z a-z 0-9 _ . -")
        try:
            parse_uri(printer.uri)
        except ValueError as exc:
            raise ConfigError(source, f"printers.{name}.uri", str(exc)) from None
        if printer.language not in LANGUAGES:
            raise ConfigError(
                source, f"printers.{name}.language", f"must be one of {', '.join(LANGUAGES)}"
            )
    for i, route in enumerate(config.routes):
        if not route.printer:
            raise ConfigError(source, f"routes[{i}].printer", "required")
        for name in route.printer:
            if name not in config.printers:
                raise ConfigError(source, f"routes[{i}].printer", f"no printer named {name!r}")
    daily = config.reports.daily
    if daily is not None:
        if daily.printer not in config.printers:
            raise ConfigError(
                source, "reports.daily.printer", f"no printer named {daily.printer!r}"
            )
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", daily.at):
            raise ConfigError(source, "reports.daily.at", "expected HH:MM (24-hour local time)")
    if config.spool.retry_cap_s < config.spool.retry_start_s:
        raise ConfigError(source, "spool.retry_cap_s", "must not be below spool.retry_start_s")


def parse_address(text: str, file: str = "-", key: str = "listen") -> tuple[str, int]:
    """'host:port' or '[v6]:port' to (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(file, key, f"{text!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(file, key, f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(file, key, f"{host!r} is not an IP address") from None
    return host, port


def _build(cls: type, data: Any, file: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(file, prefix.rstrip(".") or "-", "expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for name in data:
        if not isinstance(name, str):
            raise ConfigError(file, f"{prefix}{name!r}", "keys must be strings")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            file, prefix + str(unknown[0]), f"unknown key (known: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, value in data.items():
        key = prefix + name
        values[name] = _convert(hints[name], value, file, key, fields[name].metadata)
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in values:
            raise ConfigError(file, prefix + name, "required")
    return cls(**values)


def _convert(tp: Any, value: Any, file: str, key: str, meta: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, file, key + ".")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(file, key, f"must be one of {', '.join(map(str, choices))}")
        return value
    if tp is Any:  # route match values: plain scalars only
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigError(file, key, "expected a string, number, true, false or null")
        return value
    if origin is dict:
        _key_tp, item_tp = typing.get_args(tp)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(file, key, "expected a mapping")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(file, f"{key}.{k!r}", "keys must be strings")
            out[k] = _convert(item_tp, v, file, f"{key}.{k}", {})
        return out
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or (meta.get("nonempty") and not value):
            raise ConfigError(file, key, "expected a non-empty list" if meta else "expected a list")
        return tuple(_convert(item_tp, v, file, f"{key}[{i}]", {}) for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, file, key, meta)
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(file, key, "expected a path")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, "expected true or false")
        return value
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, key, f"expected a number, got {value!r}")
        if tp is int and not isinstance(value, int):
            raise ConfigError(file, key, f"expected a whole number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(file, key, f"expected a finite number, got {value!r}")
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and value < lo:
            raise ConfigError(file, key, f"{value} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(file, key, f"{value} is above the maximum {hi}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, "expected a string")
        return value
    raise ConfigError(file, key, f"unsupported setting type {tp}")
