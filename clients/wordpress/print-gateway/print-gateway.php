<?php
/**
 * Plugin Name: Print Gateway
 * Description: Streams audit and subscription events to a Print Gateway through a durable outbox, with acknowledgements.
 * Version: 0.1.0
 * Requires at least: 6.0
 * Requires PHP: 8.1
 * License: Proprietary
 * Text Domain: print-gateway
 */

// Entry point: loads the bundled client library and the plugin's parts, and wires WordPress hooks.
// Capture writes to the outbox table inside the request; only the drain (cron) talks to the network.

declare(strict_types=1);

if (!defined('ABSPATH')) {
    exit;
}

define('PRINT_GATEWAY_VERSION', '0.1.0');
define('PRINT_GATEWAY_FILE', __FILE__);

if (!class_exists('PrintGateway\\Client')) {
    require_once __DIR__ . '/lib/print-gateway-client/autoload.php';
}
require_once __DIR__ . '/includes/class-settings.php';
require_once __DIR__ . '/includes/class-outbox.php';
require_once __DIR__ . '/includes/class-capture.php';
require_once __DIR__ . '/includes/class-drain.php';
require_once __DIR__ . '/includes/class-admin.php';

register_activation_hook(__FILE__, ['Print_Gateway_Plugin', 'activate']);
register_deactivation_hook(__FILE__, ['Print_Gateway_Plugin', 'deactivate']);

final class Print_Gateway_Plugin
{
    public static function activate(): void
    {
        Print_Gateway_Outbox::install();
        Print_Gateway_Settings::ensure_defaults();
        Print_Gateway_Drain::schedule_recurring();
    }

    /** Stops capture (WordPress no longer loads the plugin) and the drain; the outbox stays. */
    public static function deactivate(): void
    {
        Print_Gateway_Drain::unschedule_all();
    }

    public static function boot(): void
    {
        if (get_option(Print_Gateway_Outbox::DB_VERSION_OPTION) !== Print_Gateway_Outbox::DB_VERSION) {
            Print_Gateway_Outbox::install();  // first load after an upgrade of the plugin files
        }
        Print_Gateway_Capture::register();
        Print_Gateway_Drain::register();
        if (is_admin()) {
            Print_Gateway_Admin::register();
        }
    }
}

add_action('plugins_loaded', ['Print_Gateway_Plugin', 'boot']);
