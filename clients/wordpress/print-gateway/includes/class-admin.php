<?php
// wp-admin: the settings page (Settings > Print Gateway) with "test connection" and "drain now",
// the status box, and the admin notice when unsent events are older than the threshold.
declare(strict_types=1);

use PrintGateway\Exception\GatewayException;

final class Print_Gateway_Admin
{
    private const PAGE = 'print-gateway';
    private const RESULT_TRANSIENT = 'print_gateway_admin_result_';

    public static function register(): void
    {
        add_action('admin_menu', static function (): void {
            add_options_page('Print Gateway', 'Print Gateway', 'manage_options', self::PAGE, [self::class, 'page']);
        });
        add_action('admin_init', static function (): void {
            register_setting(self::PAGE, Print_Gateway_Settings::OPTION, [
                'type' => 'array',
                'sanitize_callback' => static fn ($v) => Print_Gateway_Settings::sanitize(is_array($v) ? $v : []),
            ]);
        });
        add_action('admin_post_print_gateway_test', [self::class, 'handle_test']);
        add_action('admin_post_print_gateway_drain', [self::class, 'handle_drain']);
        add_action('admin_notices', [self::class, 'backlog_notice']);
    }

    /**
     * The gateway's answer to a hello from this site, or the error that says what failed.
     *
     * @return array{ok: bool, message: string}
     */
    public static function test_connection(): array
    {
        $client = Print_Gateway_Settings::client();
        try {
            $hello = $client->connect();
            $client->close();
            return ['ok' => true, 'message' => 'The gateway answered: ' . wp_json_encode($hello)];
        } catch (GatewayException $e) {
            return ['ok' => false, 'message' => $e->getMessage()];
        }
    }

    public static function handle_test(): void
    {
        self::guard('print_gateway_test');
        self::finish(self::test_connection());
    }

    public static function handle_drain(): void
    {
        self::guard('print_gateway_drain');
        $r = Print_Gateway_Drain::run(true);
        self::finish(['ok' => $r['error'] === null, 'message' => sprintf(
            'Drain: %d acknowledged, %d refused, %d left for later%s',
            $r['acked'], $r['refused'], $r['released'], $r['error'] !== null ? '; error: ' . $r['error'] : ''
        )]);
    }

    private static function guard(string $action): void
    {
        if (!current_user_can('manage_options')) {
            wp_die('Not allowed', 403);
        }
        check_admin_referer($action);
    }

    private static function finish(array $result): void
    {
        set_transient(self::RESULT_TRANSIENT . get_current_user_id(), $result, 60);
        wp_safe_redirect(admin_url('options-general.php?page=' . self::PAGE));
        exit;
    }

    /** @return array<string, mixed> what the status box shows */
    public static function status(): array
    {
        $stats = Print_Gateway_Outbox::stats();
        $state = Print_Gateway_Settings::state();
        return [
            'outbox_depth' => $stats['pending'],
            'oldest_unsent_age_s' => $stats['oldest_pending'] !== null ? max(0, time() - $stats['oldest_pending']) : null,
            'refused' => $stats['refused'],
            'acknowledged_kept' => $stats['acked'],
            'last_acknowledged_seq' => $state['last_seq'],
            'last_error' => $state['last_error'],
            'last_error_at' => $state['last_error_at'],
            'next_attempt' => $state['next_attempt'],
            'scheduler' => Print_Gateway_Drain::uses_action_scheduler() ? 'Action Scheduler' : 'WP-Cron',
        ];
    }

    public static function backlog_notice(): void
    {
        if (!current_user_can('manage_options')) {
            return;
        }
        $oldest = Print_Gateway_Outbox::oldest_pending();
        $limit = 60 * (int) Print_Gateway_Settings::get()['backlog_alert_minutes'];
        if ($oldest === null || time() - $oldest < $limit) {
            return;
        }
        $stats = Print_Gateway_Outbox::stats();
        $state = Print_Gateway_Settings::state();
        printf(
            '<div class="notice notice-error"><p><strong>Print Gateway:</strong> %d events are waiting to be sent; the oldest is %s old. Last error: %s. <a href="%s">Status</a></p></div>',
            $stats['pending'],
            esc_html(human_time_diff($stats['oldest_pending'])),
            esc_html((string) ($state['last_error'] ?? 'none')),
            esc_url(admin_url('options-general.php?page=' . self::PAGE))
        );
    }

    public static function page(): void
    {
        if (!current_user_can('manage_options')) {
            return;
        }
        $s = Print_Gateway_Settings::get();
        $opt = Print_Gateway_Settings::OPTION;
        $result = get_transient(self::RESULT_TRANSIENT . get_current_user_id());
        if ($result) {
            delete_transient(self::RESULT_TRANSIENT . get_current_user_id());
            printf('<div class="notice notice-%s"><p>%s</p></div>', $result['ok'] ? 'success' : 'error', esc_html($result['message']));
        }
        echo '<div class="wrap"><h1>Print Gateway</h1>';
        echo '<h2>Status</h2><table class="widefat striped" style="max-width:40em"><tbody>';
        foreach (self::status() as $k => $v) {
            if (in_array($k, ['last_error_at', 'next_attempt'], true)) {
                $v = $v ? gmdate('Y-m-d H:i:s', (int) $v) . ' UTC' : null;
            }
            printf('<tr><th>%s</th><td>%s</td></tr>', esc_html(str_replace('_', ' ', $k)), esc_html($v === null ? '-' : (string) $v));
        }
        echo '</tbody></table>';
        foreach (['print_gateway_test' => 'Test connection', 'print_gateway_drain' => 'Send now'] as $action => $label) {
            printf('<form method="post" action="%s" style="display:inline-block;margin:1em 1em 0 0">', esc_url(admin_url('admin-post.php')));
            printf('<input type="hidden" name="action" value="%s">', esc_attr($action));
            wp_nonce_field($action);
            submit_button($label, 'secondary', 'submit', false);
            echo '</form>';
        }
        echo '<h2>Settings</h2><form method="post" action="options.php">';
        settings_fields(self::PAGE);
        echo '<table class="form-table"><tbody>';
        $text = static function (string $key, string $label, string $type = 'text', string $help = '') use ($s, $opt): void {
            printf('<tr><th><label for="pgw-%1$s">%2$s</label></th><td><input id="pgw-%1$s" type="%3$s" name="%4$s[%1$s]" value="%5$s" class="regular-text">%6$s</td></tr>',
                esc_attr($key), esc_html($label), esc_attr($type), esc_attr($opt), esc_attr((string) $s[$key]),
                $help !== '' ? '<p class="description">' . esc_html($help) . '</p>' : '');
        };
        $text('host', 'Gateway host');
        $text('port', 'Port', 'number');
        $text('app', 'App name', 'text', 'Stored in the source of every entry (1-64 characters).');
        printf('<tr><th><label for="pgw-token">Token</label></th><td><input id="pgw-token" type="password" name="%1$s[token]" value="" autocomplete="new-password" class="regular-text" placeholder="%2$s"> <label><input type="checkbox" name="%1$s[token_clear]" value="1"> clear</label><p class="description">%3$s</p></td></tr>',
            esc_attr($opt), $s['token'] !== '' ? esc_attr('(set: leave empty to keep)') : '',
            esc_html("The app's secret when the gateway has one (ingest.tokens). Never shown here."));
        printf('<tr><th>TLS</th><td><label><input type="checkbox" name="%s[tls]" value="1" %s> Connect with TLS</label></td></tr>',
            esc_attr($opt), checked((bool) $s['tls'], true, false));
        $text('ca_file', 'TLS CA file', 'text', "Path to the CA that signed the gateway's certificate (pinning); empty: the system's CAs.");
        $text('peer_name', 'TLS peer name', 'text', "The name in the gateway's certificate, when it is not the host above.");
        echo '<tr><th>Capture</th><td>';
        foreach (Print_Gateway_Settings::GROUPS as $g => $label) {
            printf('<label><input type="checkbox" name="%s[capture][]" value="%s" %s> %s</label><br>', esc_attr($opt),
                esc_attr($g), checked(in_array($g, (array) $s['capture'], true), true, false), esc_html($label));
        }
        echo '</td></tr>';
        $text('batch_size', 'Batch size', 'number');
        $text('prune_after_hours', 'Keep acknowledged events (hours)', 'number');
        $text('backlog_alert_minutes', 'Warn when unsent events are older than (minutes)', 'number');
        $text('backoff_base_s', 'First retry after (seconds)', 'number');
        $text('backoff_max_s', 'Longest retry interval (seconds)', 'number');
        $text('connect_timeout_s', 'Connect timeout (seconds)', 'text');
        $text('io_timeout_s', 'Reply timeout (seconds)', 'text');
        echo '</tbody></table>';
        submit_button();
        echo '</form></div>';
    }
}
