<?php
// One "request" to a real WordPress for tests/test_wordpress.py: loads the site in WPDIR like a
// page request would (REMOTE_ADDR, user agent, host set), runs COMMAND, prints a JSON result.
// Usage: php driver.php WPDIR COMMAND [JSON-ARGS]
declare(strict_types=1);

[$_, $wpdir, $command] = $argv + [null, null, null];
$args = isset($argv[3]) ? json_decode($argv[3], true, 512, JSON_THROW_ON_ERROR) : [];

$_SERVER['HTTP_HOST'] = 'wp.test';
$_SERVER['SERVER_NAME'] = 'wp.test';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['REMOTE_ADDR'] = '203.0.113.7';
$_SERVER['HTTP_USER_AGENT'] = 'pgw-test-agent/1.0';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';

if ($command === 'install') {
    define('WP_INSTALLING', true);
}
require $wpdir . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';
require_once ABSPATH . 'wp-admin/includes/user.php';

/** A stand-in for WC_Subscription / WC_Order: WooCommerce is not installed here. */
final class Fake_Wc_Object
{
    public function __construct(private int $id)
    {
    }

    public function get_id(): int
    {
        return $this->id;
    }
}

function out($value): void
{
    echo json_encode($value, JSON_UNESCAPED_SLASHES | JSON_PRETTY_PRINT), "\n";
}

function pgw_rows(): array
{
    global $wpdb;
    $t = Print_Gateway_Outbox::table();
    return $wpdb->get_results("SELECT id, event_id, status, seq, claim, attempts, last_error, payload FROM $t ORDER BY id", ARRAY_A);
}

function p95(array $xs): float
{
    sort($xs);
    return $xs[(int) ceil(0.95 * count($xs)) - 1];
}

switch ($command) {
    case 'install':
        require_once ABSPATH . 'wp-admin/includes/upgrade.php';
        wp_install('Print Gateway test', 'admin', 'admin@example.test', true, '', 'admin-password-1');
        $r = activate_plugin('print-gateway/print-gateway.php');
        if (is_wp_error($r)) {
            fwrite(STDERR, $r->get_error_message());
            exit(1);
        }
        out(['ok' => true]);
        break;

    case 'configure':
        update_option(Print_Gateway_Settings::OPTION, array_merge(Print_Gateway_Settings::get(), $args));
        out(Print_Gateway_Settings::get());
        break;

    case 'scenario':
        // Done as the administrator, like edits in wp-admin.
        wp_set_current_user(1);
        $uid = wp_insert_user(['user_login' => 'carol', 'user_email' => 'carol@example.test',
            'user_pass' => 'carol-password-1', 'display_name' => 'Carol', 'role' => 'subscriber']);
        wp_update_user(['ID' => $uid, 'user_email' => 'carol@new.example.test', 'display_name' => 'Carol K',
            'user_pass' => 'carol-password-2']);
        (new WP_User($uid))->set_role('editor');
        $post = wp_insert_post(['post_title' => 'Draft ticket', 'post_status' => 'draft', 'post_content' => 'x']);
        wp_update_post(['ID' => $post, 'post_title' => 'Ticket 7', 'post_status' => 'publish']);
        register_post_type('ticket', ['public' => false]);
        $ticket = wp_insert_post(['post_type' => 'ticket', 'post_title' => 'Register 1', 'post_status' => 'publish']);
        wp_trash_post($ticket);
        $gone = wp_insert_post(['post_title' => 'Short-lived', 'post_status' => 'publish']);
        wp_delete_post($gone, true);
        $old_name = get_option('blogname');
        update_option('blogname', 'Renamed site');
        update_option('mailserver_pass', 'hunter2-secret');  // named like a secret: values not sent
        set_transient('pgw_noise', 'x', 60);  // excluded: never captured
        activate_plugin('pgw-dummy/pgw-dummy.php');
        deactivate_plugins('pgw-dummy/pgw-dummy.php');
        wp_set_current_user(0);
        wp_signon(['user_login' => 'carol', 'user_password' => 'wrong'], false);
        wp_signon(['user_login' => 'carol', 'user_password' => 'carol-password-2'], false);
        wp_set_current_user(1);
        do_action('woocommerce_order_status_changed', 501, 'pending', 'processing', new Fake_Wc_Object(501));
        $sub = new Fake_Wc_Object(601);
        do_action('woocommerce_subscription_status_updated', $sub, 'on-hold', 'active');
        do_action('woocommerce_subscription_renewal_payment_complete', $sub, new Fake_Wc_Object(502));
        do_action('woocommerce_subscription_status_cancelled', $sub);
        do_action('woocommerce_subscription_status_expired', new Fake_Wc_Object(602));
        do_action('print_gateway_event', ['event_type' => 'ticket_printed', 'object_id' => 7, 'copies' => 2,
            'printer' => ['name' => 'front desk', 'license_key' => 'sk-live-do-not-send']]);
        wp_delete_user($uid);
        out(['user' => $uid, 'post' => $post, 'ticket' => $ticket, 'gone' => $gone, 'old_blogname' => $old_name]);
        break;

    case 'changes':
        // $args['n'] captured option updates, each timed: the plugin's callbacks alone
        // (Print_Gateway_Capture::$profile) and the whole update_option call.
        wp_set_current_user(1);
        $plugin = [];
        $whole = [];
        for ($i = 0; $i < (int) $args['n']; $i++) {
            Print_Gateway_Capture::$profile = [];
            $t0 = hrtime(true);
            update_option('pgw_bench_' . $args['tag'], $args['tag'] . '-' . $i);
            $whole[] = (hrtime(true) - $t0) / 1e6;
            $plugin[] = array_sum(Print_Gateway_Capture::$profile) * 1000;
        }
        Print_Gateway_Capture::$profile = null;
        out(['plugin_ms_p95' => p95($plugin), 'plugin_ms_max' => max($plugin),
            'update_option_ms_p95' => p95($whole), 'n' => count($plugin)]);
        break;

    case 'baseline':
        // The same update_option calls with the plugin's capture hooks removed, for comparison.
        remove_all_actions('updated_option');
        remove_all_actions('added_option');
        $whole = [];
        for ($i = 0; $i < (int) $args['n']; $i++) {
            $t0 = hrtime(true);
            update_option('pgw_bench_base', 'b-' . $i);
            $whole[] = (hrtime(true) - $t0) / 1e6;
        }
        out(['update_option_ms_p95' => p95($whole)]);
        break;

    case 'drain':
        out(Print_Gateway_Drain::run((bool) ($args['force'] ?? false)));
        break;

    case 'rows':
        out(pgw_rows());
        break;

    case 'status':
        out(Print_Gateway_Admin::status() + ['cron_soon' => wp_next_scheduled(Print_Gateway_Drain::HOOK, ['soon'])]);
        break;

    case 'test_connection':
        out(Print_Gateway_Admin::test_connection());
        break;

    case 'admin_page':
        require_once ABSPATH . 'wp-admin/includes/template.php';
        wp_set_current_user(1);
        ob_start();
        Print_Gateway_Admin::page();
        out(['html' => ob_get_clean()]);
        break;

    case 'sanitize':
        // What the settings form stores for $args (the token: kept when the field is empty).
        out(Print_Gateway_Settings::sanitize($args));
        break;

    case 'fake_as':
        if ($args['on']) {
            update_option('pgw_test_fake_as', 1);
        } else {
            delete_option('pgw_test_fake_as');
            @unlink(ABSPATH . 'fake-as.json');
        }
        out(['ok' => true]);
        break;

    case 'as_actions':
        out(function_exists('pgw_fake_as_load') ? pgw_fake_as_load() : null);
        break;

    case 'as_run':
        // Runs the due actions as Action Scheduler's queue runner would: single ones once.
        $ran = [];
        $keep = [];
        $before = pgw_fake_as_load();
        foreach ($before as $a) {
            if ($a['ts'] <= time()) {
                do_action_ref_array($a['hook'], $a['args']);
                $ran[] = $a;
                if ($a['interval'] > 0) {
                    $a['ts'] = time() + $a['interval'];
                    $keep[] = $a;
                }
            } else {
                $keep[] = $a;
            }
        }
        // Actions scheduled while these ran (nudges) were appended after the ones loaded.
        pgw_fake_as_save(array_merge($keep, array_slice(pgw_fake_as_load(), count($before))));
        out($ran);
        break;

    case 'backoff':
        $samples = [];
        foreach ([1, 2, 3, 8, 20, 40] as $failures) {
            for ($i = 0; $i < 50; $i++) {
                $samples[$failures][] = Print_Gateway_Drain::backoff($failures, 30, 3600);
            }
        }
        out($samples);
        break;

    case 'notice':
        ob_start();
        wp_set_current_user(1);
        Print_Gateway_Admin::backlog_notice();
        out(['html' => ob_get_clean()]);
        break;

    case 'age_outbox':
        global $wpdb;
        $wpdb->query($wpdb->prepare('UPDATE ' . Print_Gateway_Outbox::table() . ' SET created_at = created_at - %d WHERE status = %s',
            (int) $args['seconds'], 'pending'));
        $wpdb->query($wpdb->prepare('UPDATE ' . Print_Gateway_Outbox::table() . ' SET acked_at = acked_at - %d WHERE status = %s',
            (int) $args['seconds'], 'acked'));
        out(['ok' => true]);
        break;

    case 'emit':
        for ($i = 0; $i < (int) $args['n']; $i++) {
            do_action('print_gateway_event', ['event_type' => 'bulk', 'n' => $i, 'tag' => $args['tag']]);
        }
        out(['ok' => true]);
        break;

    case 'deactivate':
        deactivate_plugins('print-gateway/print-gateway.php');
        // The plugin is still loaded in this request: its own deactivation is captured.
        out(['active' => is_plugin_active('print-gateway/print-gateway.php'),
            'cron' => wp_next_scheduled('print_gateway_drain'), 'rows' => pgw_rows()]);
        break;

    case 'inactive_state':
        global $wpdb;
        update_option('blogname', 'Renamed while inactive');
        $t = $wpdb->prefix . 'print_gateway_outbox';
        out(['rows' => (int) $wpdb->get_var("SELECT COUNT(*) FROM $t"),
            'table' => $wpdb->get_var("SHOW TABLES LIKE '$t'")]);
        break;

    case 'uninstall':
        global $wpdb;
        uninstall_plugin('print-gateway/print-gateway.php');
        $t = $wpdb->prefix . 'print_gateway_outbox';
        out(['table' => $wpdb->get_var("SHOW TABLES LIKE '$t'"),
            'settings' => get_option('print_gateway_settings', null),
            'state' => get_option('print_gateway_state', null)]);
        break;

    default:
        fwrite(STDERR, "unknown command $command\n");
        exit(2);
}
