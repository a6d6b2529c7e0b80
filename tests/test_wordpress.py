"""The WordPress plugin in a real WordPress (Debian's package) on a private MariaDB, against the
real gateway: capture, drain from wp-cron.php, exactly-once delivery, outage and backlog.

Run by `make test-php` (marker `php`); `make test` leaves it out. It fails, never skips, when
php-cli, the wordpress package or mariadb-server are missing.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from gatewayproc import GatewayProcess
from wpsite import (
    DRIVER,
    PHP_TIMEOUT_S,
    TIMED_CHANGES,
    MariaDB,
    WordPress,
    assert_delivered_once,
    drain_until_empty,
    ledger_events,
    measure_capture,
    need,
)

pytestmark = pytest.mark.php


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    need("php")
    base = tmp_path_factory.mktemp("wordpress")
    db = MariaDB(base)
    try:
        wp = WordPress(base, db)
        wp.php("install")
        yield wp, db
    finally:
        db.stop()


def test_action_scheduler_runs_the_drain_when_present(
    site: tuple[WordPress, MariaDB], tmp_path: Path
) -> None:
    """With Action Scheduler's functions defined (a stand-in: WooCommerce is not packaged in
    Debian), the drain is scheduled there instead of WP-Cron, and runs from its queue."""
    wp, _ = site
    gw = GatewayProcess(tmp_path)
    try:
        wp.php("configure", {"port": gw.port, "app": "wp-as"})
        wp.php("fake_as", {"on": True})
        wp.php("drain", {"force": True})  # what the fresh site captured by itself
        wp.php("emit", {"n": 5, "tag": "as"})
        actions = wp.php("as_actions")
        plan = {(a["hook"], tuple(a["args"]), a["group"], a["interval"]) for a in actions}
        assert ("print_gateway_drain", ("soon",), "print-gateway", 0) in plan, actions
        assert ("print_gateway_drain", (), "print-gateway", 60) in plan, actions
        ran = wp.php("as_run")
        assert any(a["args"] == ["soon"] for a in ran), ran
        rows = wp.php("rows")
        assert_delivered_once(rows, ledger_events(gw))
        assert len([r for r in rows if '"tag":"as"' in r["payload"]]) == 5
    finally:
        wp.php("fake_as", {"on": False})
        gw.close()


def test_capture_drain_outage_and_backlog(site: tuple[WordPress, MariaDB], tmp_path: Path) -> None:
    wp, db = site
    gw = GatewayProcess(tmp_path)
    try:
        wp.php(
            "configure",
            {"port": gw.port, "app": "wp-test", "backoff_base_s": 1, "backoff_max_s": 2},
        )
        answer = wp.php("test_connection")
        assert answer["ok"] is True and '"head_seq"' in answer["message"], answer
        page = wp.php("admin_page")["html"]
        for needle in ('name="print_gateway_settings[host]"', 'value="print_gateway_test"',
                       "outbox depth", "last acknowledged seq", "WP-Cron"):  # fmt: skip
            assert needle in page, needle
        # The settings form never shows the token; an empty field keeps it.
        wp.php("configure", {"token": "stored-token-value-123"})
        assert "stored-token-value-123" not in wp.php("admin_page")["html"]
        assert wp.php("sanitize", {"token": ""})["token"] == "stored-token-value-123"
        assert (
            wp.php("sanitize", {"token": "new-token-value-456"})["token"] == "new-token-value-456"
        )
        assert wp.php("sanitize", {"token": "", "token_clear": "1"})["token"] == ""
        assert wp.php("sanitize", {"port": "99999", "batch_size": "0"})["port"] == 65535
        wp.php("configure", {"token": ""})
        # Exponential backoff with equal jitter: half of the doubled delay fixed, half random.
        for failures, delays in wp.php("backoff").items():
            full = min(3600, 30 * 2 ** (int(failures) - 1))
            assert all(full / 2 <= d <= full for d in delays), (failures, delays)
            assert len(set(delays)) > 1 or full < 2, (failures, delays)

        # ---- a real scenario, drained by wp-cron.php
        earlier = {r["id"] for r in wp.php("rows")}
        ids = wp.php("scenario")
        captured = [r for r in wp.php("rows") if r["id"] not in earlier]
        assert captured and all(r["status"] == "pending" and r["seq"] is None for r in captured)
        wp.cron()
        # WordPress's own cron jobs may change options too (captured like any other change):
        # the scenario's rows are the ones that must have gone out in this run.
        rows = wp.php("rows")
        by_row = {r["id"]: r for r in rows}
        scenario_rows = [by_row[r["id"]] for r in captured]
        events = ledger_events(gw)
        assert_delivered_once(scenario_rows, events)
        status = wp.php("status")
        assert status["last_acknowledged_seq"] == max(int(r["seq"]) for r in rows if r["seq"])
        for e in events:
            assert e["source"]["app"] == "wp-test"
            assert e["flags"] == [], e  # event_type and an RFC 3339 timestamp on every event
        got = [
            e["event"]
            for e in events
            if e["event"]["event_id"] in {r["event_id"] for r in captured}
        ]

        def find(action: str, **match) -> dict:
            hits = [
                e
                for e in got
                if e.get("action") == action and all(e.get(k) == v for k, v in match.items())
            ]
            assert len(hits) == 1, f"{action} {match}: {len(hits)} events; all: {got}"
            return hits[0]

        uid, post = ids["user"], ids["post"]
        reg = find("user_registered", object_id=uid)
        assert reg["new_value"]["user_login"] == "carol"
        assert reg["username"] == "admin" and reg["user_id"] == 1
        assert reg["context"] == {
            "ip": "203.0.113.7",
            "user_agent": "pgw-test-agent/1.0",
            "hook": "user_register",
            "site_url": "http://wp.test",
        }
        upd = find("user_updated", object_id=uid)
        assert upd["old_value"] == {"user_email": "carol@example.test", "display_name": "Carol"}
        assert upd["new_value"] == {
            "user_email": "carol@new.example.test",
            "display_name": "Carol K",
        }
        assert upd["changed_fields"] == ["user_email", "display_name", "user_pass"]
        role = [e for e in got if e.get("action") == "user_role_changed" and e["object_id"] == uid]
        assert {"old_value": ["subscriber"], "new_value": ["editor"]} in [
            {"old_value": e["old_value"], "new_value": e["new_value"]} for e in role
        ]
        pub = find(
            "post_status_changed",
            object_id=post,
            new_value={"post_status": "publish", "post_title": "Ticket 7"},
        )
        assert pub["old_value"] == {"post_status": "draft"} and pub["object_type"] == "post"
        edit = find("post_updated", object_id=post)
        assert edit["old_value"]["post_title"] == "Draft ticket"
        assert edit["new_value"]["post_title"] == "Ticket 7"
        trash = find("post_trashed", object_id=ids["ticket"])
        assert trash["object_type"] == "ticket" and trash["old_value"] == {"post_status": "publish"}
        find("post_deleted", object_id=ids["gone"])
        opt = find("option_updated", object_id="blogname")
        assert opt["old_value"] == ids["old_blogname"] and opt["new_value"] == "Renamed site"
        secret = find("option_updated", object_id="mailserver_pass")
        assert secret["old_value"] == secret["new_value"] == "[not sent: secret]"
        assert not [e for e in got if "transient" in str(e.get("object_id"))]
        assert not [e for e in got if str(e.get("object_id")).startswith(("cron", "print_gateway"))]
        find("plugin_activated", object_id="pgw-dummy/pgw-dummy.php")
        find("plugin_deactivated", object_id="pgw-dummy/pgw-dummy.php")
        failed = find("user_login_failed")
        assert failed["username"] == "carol" and failed["user_id"] is None
        find("user_logged_in", object_id=uid, username="carol")
        order = find("order_status_changed", object_id=501)
        assert (order["old_value"], order["new_value"]) == (
            {"status": "pending"},
            {"status": "processing"},
        )
        sub = find("subscription_status_updated", object_id=601)
        assert (sub["old_value"], sub["new_value"]) == ({"status": "active"}, {"status": "on-hold"})
        renew = find("subscription_renewal_payment_complete", object_id=601)
        assert renew["new_value"] == {"renewal_order_id": 502}
        find("subscription_cancelled", object_id=601)
        find("subscription_expired", object_id=602)
        custom = [e for e in got if e["event_type"] == "ticket_printed"]
        assert len(custom) == 1 and custom[0]["copies"] == 2
        assert custom[0]["printer"] == {"name": "front desk", "license_key": "[not sent: secret]"}
        find("user_deleted", object_id=uid)
        text = json.dumps(got)
        for secret_text in ("carol-password", "hunter2", "$P$", "$wp$", "sk-live"):
            assert secret_text not in text

        # ---- the cost of a captured event in the request, gateway up
        measure_capture(wp, db, "up")
        drain_until_empty(wp)

        # ---- gateway down: capture costs the same, the drain fails fast and backs off
        gw.stop()
        measure_capture(wp, db, "down")
        t0 = time.monotonic()
        wp.cron()
        assert time.monotonic() - t0 < PHP_TIMEOUT_S
        status = wp.php("status")
        assert status["outbox_depth"] == 2 * TIMED_CHANGES, status
        assert "connect failed" in status["last_error"], status
        down_answer = wp.php("test_connection")
        assert down_answer["ok"] is False
        assert f"127.0.0.1:{gw.port}: connect failed" in down_answer["message"], down_answer
        assert status["next_attempt"] > 0
        # An old backlog shows the admin notice.
        assert wp.php("notice")["html"] == ""
        wp.php("age_outbox", {"seconds": 3600})
        assert "events are waiting to be sent" in wp.php("notice")["html"]

        # ---- gateway back: the backlog is delivered exactly once
        gw.start()
        drain_until_empty(wp)
        rows = [r for r in wp.php("rows") if r["id"] not in earlier]
        assert len(rows) == len([r for r in rows if r["status"] == "acked"])
        assert_delivered_once(rows, ledger_events(gw))
        assert len([r for r in rows if '"down-' in r["payload"]]) == 2 * TIMED_CHANGES
        assert wp.php("notice")["html"] == ""

        # ---- two drain runs at once never send the same rows
        wp.php("configure", {"batch_size": 10})
        wp.php("emit", {"n": 300, "tag": "race"})
        drains = [
            subprocess.Popen(
                [need("php"), str(DRIVER), str(wp.dir), "drain", json.dumps({"force": True})],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = []
        for p in drains:
            out, err = p.communicate(timeout=PHP_TIMEOUT_S)
            assert p.returncode == 0, err
            results.append(json.loads(out))
        assert sum(r["acked"] for r in results) == 300, results
        print(f"concurrent drains: {[r['acked'] for r in results]} events each")
        rows = [r for r in wp.php("rows") if r["id"] not in earlier]
        assert_delivered_once(rows, ledger_events(gw))

        # ---- acknowledged rows are pruned after prune_after_hours, unacknowledged never
        gw.stop()
        wp.php("emit", {"n": 3, "tag": "kept"})
        wp.php("age_outbox", {"seconds": 200 * 3600})
        wp.php("drain", {"force": True})  # prunes, then fails to connect
        rows = [r for r in wp.php("rows") if r["id"] not in earlier]
        assert [r["status"] for r in rows] == ["pending"] * 3, rows

        # ---- deactivation stops capture and keeps the outbox; uninstall removes everything
        off = wp.php("deactivate")
        assert (off["active"], off["cron"]) == (False, False)
        own = [json.loads(r["payload"]) for r in off["rows"][3:]]
        assert [
            (e["action"], e["object_id"]) for e in own if e["action"] == "plugin_deactivated"
        ] == [("plugin_deactivated", "print-gateway/print-gateway.php")]
        # Inactive: nothing more is captured, the unsent rows stay.
        after = wp.php("inactive_state")
        assert after == {"rows": len(off["rows"]), "table": "wp_print_gateway_outbox"}
        gone = wp.php("uninstall")
        assert gone == {"table": None, "settings": None, "state": None}
        ours = [line for line in wp.debug_text().splitlines() if "print-gateway" in line]
        assert ours == [], ours[:5]
    finally:
        gw.close()
