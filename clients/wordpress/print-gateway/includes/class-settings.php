<?php
// The plugin's settings (one option) and its run state (another option), with documented defaults.
declare(strict_types=1);

final class Print_Gateway_Settings
{
    public const OPTION = 'print_gateway_settings';
    public const STATE_OPTION = 'print_gateway_state';

    /** Event groups a site can switch on and off on the settings page. */
    public const GROUPS = [
        'users' => 'Users (registered, profile updated, role changed, deleted, logged in, failed login)',
        'posts' => 'Posts, pages and custom post types (status changes, updates, trash, delete)',
        'options' => 'Options (added, updated with old and new value, deleted)',
        'plugins' => 'Plugins (activated, deactivated)',
        'woocommerce' => 'WooCommerce orders (status changed)',
        'subscriptions' => 'WooCommerce Subscriptions (status updated, renewal paid, cancelled, expired)',
        'custom' => "The site's own events (do_action('print_gateway_event', \$event))",
    ];

    /** @return array<string, mixed> */
    public static function defaults(): array
    {
        return [
            'host' => '127.0.0.1',
            'port' => 50001,  // the gateway's default ingest port
            'token' => '',
            'tls' => false,
            'ca_file' => '',
            'peer_name' => '',
            'app' => 'wordpress',
            'capture' => array_keys(self::GROUPS),
            // Rows per claimed batch: one window of the client, one round trip and one group commit.
            'batch_size' => 100,
            // Acknowledged rows are kept this long (for the status box and for a look back), then pruned.
            'prune_after_hours' => 168,
            // The admin notice appears when the oldest unsent event is older than this.
            'backlog_alert_minutes' => 30,
            // First retry after a failed drain; doubles per failure up to backoff_max_s, with jitter.
            'backoff_base_s' => 30,
            // An hour: a long gateway outage costs at most one connect attempt an hour.
            'backoff_max_s' => 3600,
            'connect_timeout_s' => 0.5,  // the client's default: a dead gateway costs a cron run 0.5 s
            'io_timeout_s' => 5.0,  // the client's default: far beyond a group commit on an SD card
        ];
    }

    /** @return array<string, mixed> */
    public static function get(): array
    {
        $stored = get_option(self::OPTION, []);
        return array_merge(self::defaults(), is_array($stored) ? $stored : []);
    }

    public static function ensure_defaults(): void
    {
        add_option(self::OPTION, self::defaults());
        add_option(self::STATE_OPTION, self::default_state(), '', 'no');  // not autoloaded: only cron and admin read it
    }

    /** @return array<string, mixed> */
    public static function default_state(): array
    {
        return [
            'last_seq' => null,
            'last_ack_at' => null,
            'last_error' => null,
            'last_error_at' => null,
            'failures' => 0,
            'next_attempt' => 0,
        ];
    }

    /** @return array<string, mixed> */
    public static function state(): array
    {
        wp_cache_delete(self::STATE_OPTION, 'options');  // another process (cron) may have changed it
        $stored = get_option(self::STATE_OPTION, []);
        return array_merge(self::default_state(), is_array($stored) ? $stored : []);
    }

    /** @param array<string, mixed> $changes */
    public static function update_state(array $changes): void
    {
        update_option(self::STATE_OPTION, array_merge(self::state(), $changes), false);
    }

    /** @param array<string, mixed> $input raw form input @return array<string, mixed> */
    public static function sanitize(array $input): array
    {
        $d = self::defaults();
        $num = static fn ($k, $min, $max) => max($min, min($max, (float) ($input[$k] ?? $d[$k])));
        $capture = array_values(array_intersect(array_keys(self::GROUPS), (array) ($input['capture'] ?? [])));
        return [
            'host' => sanitize_text_field((string) ($input['host'] ?? $d['host'])),
            'port' => (int) $num('port', 1, 65535),
            // The form never shows the stored token: an empty field keeps it, "clear" removes it.
            'token' => !empty($input['token_clear']) ? ''
                : (trim((string) ($input['token'] ?? '')) !== '' ? trim((string) $input['token']) : (string) self::get()['token']),
            'tls' => !empty($input['tls']),
            'ca_file' => sanitize_text_field((string) ($input['ca_file'] ?? '')),
            'peer_name' => sanitize_text_field((string) ($input['peer_name'] ?? '')),
            'app' => substr(sanitize_text_field((string) ($input['app'] ?? $d['app'])), 0, 64) ?: $d['app'],
            'capture' => $capture,
            'batch_size' => (int) $num('batch_size', 1, 1000),
            'prune_after_hours' => (int) $num('prune_after_hours', 1, 24 * 365),
            'backlog_alert_minutes' => (int) $num('backlog_alert_minutes', 1, 24 * 60 * 30),
            'backoff_base_s' => (int) $num('backoff_base_s', 1, 3600),
            'backoff_max_s' => (int) $num('backoff_max_s', 1, 86400),
            'connect_timeout_s' => $num('connect_timeout_s', 0.05, 10),
            'io_timeout_s' => $num('io_timeout_s', 0.1, 60),
        ];
    }

    /** A client for the configured gateway. */
    public static function client(): PrintGateway\Client
    {
        $s = self::get();
        return new PrintGateway\Client(
            host: (string) $s['host'],
            port: (int) $s['port'],
            app: $s['app'] !== '' ? (string) $s['app'] : null,
            token: $s['token'] !== '' ? (string) $s['token'] : null,
            connectTimeout: (float) $s['connect_timeout_s'],
            ioTimeout: (float) $s['io_timeout_s'],
            tls: (bool) $s['tls'],
            caFile: $s['ca_file'] !== '' ? (string) $s['ca_file'] : null,
            peerName: $s['peer_name'] !== '' ? (string) $s['peer_name'] : null,
        );
    }
}
