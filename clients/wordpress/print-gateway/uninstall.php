<?php
// Uninstall (deleting the plugin in wp-admin): removes the outbox table, the options and the schedule.
declare(strict_types=1);

if (!defined('WP_UNINSTALL_PLUGIN')) {
    exit;
}
require_once __DIR__ . '/includes/class-settings.php';
require_once __DIR__ . '/includes/class-outbox.php';
require_once __DIR__ . '/includes/class-drain.php';

Print_Gateway_Drain::unschedule_all();
Print_Gateway_Outbox::uninstall();
delete_option(Print_Gateway_Settings::OPTION);
delete_option(Print_Gateway_Settings::STATE_OPTION);
