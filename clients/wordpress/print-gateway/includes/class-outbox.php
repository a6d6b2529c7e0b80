<?php
// The durable outbox: one table row per captured event, claimed in batches by drain runs,
// marked with the gateway's seq when acknowledged, pruned only after acknowledgement.
declare(strict_types=1);

final class Print_Gateway_Outbox
{
    public const DB_VERSION = '1';
    public const DB_VERSION_OPTION = 'print_gateway_db_version';

    /**
     * A claim older than this is taken to belong to a drain run that died (PHP fatal, killed
     * worker) and its rows are claimed again. It is far beyond one run's time budget
     * (Print_Gateway_Drain::TIME_BUDGET_S plus one batch's I/O timeouts), so a run that is still
     * alive never has its rows taken from it.
     */
    public const STALE_CLAIM_S = 600;

    public const PENDING = 'pending';
    public const ACKED = 'acked';
    public const REFUSED = 'refused';  // refused for good by the gateway (bad event): kept, never resent

    public static function table(): string
    {
        global $wpdb;
        return $wpdb->prefix . 'print_gateway_outbox';
    }

    public static function install(): void
    {
        global $wpdb;
        require_once ABSPATH . 'wp-admin/includes/upgrade.php';
        $table = self::table();
        $charset = $wpdb->get_charset_collate();
        // event_id: a UUID v4 (36 characters); 128 is the gateway's limit for any id.
        // claim: a random 32-hex token of the drain run holding the row.
        dbDelta("CREATE TABLE $table (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  event_id varchar(128) NOT NULL,
  created_at bigint(20) NOT NULL,
  payload longtext NOT NULL,
  status varchar(16) NOT NULL DEFAULT 'pending',
  claim varchar(32) DEFAULT NULL,
  claimed_at bigint(20) DEFAULT NULL,
  attempts int(11) NOT NULL DEFAULT 0,
  seq bigint(20) DEFAULT NULL,
  acked_at bigint(20) DEFAULT NULL,
  last_error varchar(255) DEFAULT NULL,
  PRIMARY KEY  (id),
  UNIQUE KEY event_id (event_id),
  KEY status_id (status,id),
  KEY claim (claim),
  KEY acked_at (acked_at)
) $charset;");
        update_option(self::DB_VERSION_OPTION, self::DB_VERSION);
    }

    public static function uninstall(): void
    {
        global $wpdb;
        $wpdb->query('DROP TABLE IF EXISTS ' . self::table());
        delete_option(self::DB_VERSION_OPTION);
    }

    /** One insert, in the page request; the only thing capture costs. */
    public static function add(string $event_id, string $payload): bool
    {
        global $wpdb;
        return (bool) $wpdb->insert(self::table(), [
            'event_id' => $event_id,
            'created_at' => time(),
            'payload' => $payload,
            'status' => self::PENDING,
        ], ['%s', '%d', '%s', '%s']);
    }

    /**
     * Claims up to $n pending rows for one drain run, atomically: a single UPDATE marks them with
     * the run's token (two runs cannot mark the same row), then they are read back by token.
     *
     * @return list<object{id: string, event_id: string, payload: string, attempts: string}>
     */
    public static function claim(string $token, int $n): array
    {
        global $wpdb;
        $table = self::table();
        $now = time();
        self::update($wpdb->prepare(
            "UPDATE $table SET claim = %s, claimed_at = %d
             WHERE status = %s AND (claim IS NULL OR claimed_at < %d)
             ORDER BY id LIMIT %d",
            $token, $now, self::PENDING, $now - self::STALE_CLAIM_S, $n
        ));
        return $wpdb->get_results($wpdb->prepare(
            "SELECT id, event_id, payload, attempts FROM $table WHERE claim = %s AND status = %s ORDER BY id",
            $token, self::PENDING
        ));
    }

    /**
     * Runs one UPDATE, again when InnoDB chose it as a deadlock victim (two drain runs updating
     * neighbouring rows at once) or it waited too long for a lock: the statement was then rolled
     * back, and a lost "acked" would leave a delivered row pending. At most 5 tries, 10-50 ms
     * apart; any other error is left for the next run (the claim's timeout releases the rows).
     */
    private static function update(string $sql): void
    {
        global $wpdb;
        for ($try = 1; $try <= 5; $try++) {
            if ($wpdb->query($sql) !== false) {
                return;
            }
            $error = strtolower((string) $wpdb->last_error);
            if (!str_contains($error, 'deadlock') && !str_contains($error, 'lock wait')) {
                return;
            }
            usleep(10000 * $try);
        }
    }

    public static function ack(int $id, string $token, int $seq): void
    {
        global $wpdb;
        self::update($wpdb->prepare(
            'UPDATE ' . self::table() . ' SET status = %s, seq = %d, acked_at = %d, claim = NULL,
             attempts = attempts + 1, last_error = NULL WHERE id = %d AND claim = %s',
            self::ACKED, $seq, time(), $id, $token
        ));
    }

    public static function refuse(int $id, string $token, string $error): void
    {
        global $wpdb;
        self::update($wpdb->prepare(
            'UPDATE ' . self::table() . ' SET status = %s, claim = NULL, attempts = attempts + 1,
             last_error = %s WHERE id = %d AND claim = %s',
            self::REFUSED, substr($error, 0, 255), $id, $token
        ));
    }

    /** Gives rows back for a later run (no reply, a transient refusal, or not sent at all). */
    public static function release(array $ids, string $token, ?string $error, bool $attempted): void
    {
        global $wpdb;
        if ($ids === []) {
            return;
        }
        $in = implode(',', array_map('intval', $ids));
        $sql = $wpdb->prepare('UPDATE ' . self::table() . ' SET claim = NULL, attempts = attempts + %d', $attempted ? 1 : 0);
        if ($error !== null) {
            $sql .= $wpdb->prepare(', last_error = %s', substr($error, 0, 255));
        }
        self::update($sql . $wpdb->prepare(" WHERE id IN ($in) AND claim = %s", $token));
    }

    /** Deletes acknowledged rows older than $hours; never touches a row without an ack. */
    public static function prune(int $hours): int
    {
        global $wpdb;
        return (int) $wpdb->query($wpdb->prepare(
            'DELETE FROM ' . self::table() . ' WHERE status = %s AND acked_at IS NOT NULL AND acked_at < %d',
            self::ACKED, time() - $hours * 3600
        ));
    }

    /** Creation time of the oldest unsent row (one index range read: cheap on every admin page). */
    public static function oldest_pending(): ?int
    {
        global $wpdb;
        $v = $wpdb->get_var($wpdb->prepare('SELECT MIN(created_at) FROM ' . self::table() . ' WHERE status = %s', self::PENDING));
        return $v === null ? null : (int) $v;
    }

    /** @return array{pending: int, refused: int, acked: int, oldest_pending: ?int} */
    public static function stats(): array
    {
        global $wpdb;
        $table = self::table();
        $rows = $wpdb->get_results("SELECT status, COUNT(*) AS n, MIN(created_at) AS oldest FROM $table GROUP BY status");
        $out = ['pending' => 0, 'refused' => 0, 'acked' => 0, 'oldest_pending' => null];
        foreach ((array) $rows as $r) {
            if (isset($out[$r->status])) {
                $out[$r->status] = (int) $r->n;
            }
            if ($r->status === self::PENDING) {
                $out['oldest_pending'] = (int) $r->oldest;
            }
        }
        return $out;
    }
}
