<?php
// A stand-in for Action Scheduler's public functions (WooCommerce, which bundles it, is not
// packaged in Debian), defined only while the option pgw_test_fake_as is set. Scheduled actions
// go to a file (an option would itself be captured); `driver.php WPDIR as_run` runs the due ones.
if (get_option('pgw_test_fake_as')) {
    function pgw_fake_as_file(): string { return ABSPATH . 'fake-as.json'; }
    function pgw_fake_as_load(): array {
        $f = pgw_fake_as_file();
        return is_file($f) ? json_decode(file_get_contents($f), true) : [];
    }
    function pgw_fake_as_save(array $a): void { file_put_contents(pgw_fake_as_file(), json_encode($a)); }
    function pgw_fake_as_add(int $ts, int $interval, string $hook, array $args, string $group): int {
        $a = pgw_fake_as_load();
        $a[] = ['hook' => $hook, 'args' => $args, 'group' => $group, 'ts' => $ts, 'interval' => $interval];
        pgw_fake_as_save($a);
        return count($a);
    }
    function as_schedule_single_action($ts, $hook, $args = [], $group = '') {
        return pgw_fake_as_add((int) $ts, 0, $hook, $args, $group);
    }
    function as_schedule_recurring_action($ts, $interval, $hook, $args = [], $group = '') {
        return pgw_fake_as_add((int) $ts, (int) $interval, $hook, $args, $group);
    }
    function as_has_scheduled_action($hook, $args = null, $group = '') {
        foreach (pgw_fake_as_load() as $x) {
            if ($x['hook'] === $hook && ($args === null || $x['args'] === $args) && $x['group'] === $group) {
                return true;
            }
        }
        return false;
    }
    function as_unschedule_all_actions($hook, $args = [], $group = '') {
        pgw_fake_as_save(array_values(array_filter(pgw_fake_as_load(),
            fn ($x) => !($x['hook'] === $hook && $x['group'] === $group))));
    }
}
