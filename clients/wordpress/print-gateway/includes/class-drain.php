<?php
// The drain: claims outbox batches, sends them with acknowledgements, stores each seq, and
// retries failures with exponential backoff and jitter. Runs from Action Scheduler when present,
// WP-Cron otherwise (which system cron can drive: see readme.txt).
declare(strict_types=1);

use PrintGateway\Ack;
use PrintGateway\Exception\GatewayException;
use PrintGateway\Refusal;

final class Print_Gateway_Drain
{
    public const HOOK = 'print_gateway_drain';
    public const AS_GROUP = 'print-gateway';
    public const SCHEDULE = 'print_gateway_minute';

    /**
     * One run stops claiming new batches after this long, so that it ends well within PHP's usual
     * max_execution_time (30 s) and far within Print_Gateway_Outbox::STALE_CLAIM_S.
     */
    public const TIME_BUDGET_S = 20;

    /** The recurring run: a safety net behind the run scheduled when an event is captured. */
    public const INTERVAL_S = 60;

    public static function register(): void
    {
        add_action(self::HOOK, [self::class, 'run_from_scheduler']);
        add_filter('cron_schedules', static function (array $s): array {
            $s[self::SCHEDULE] = ['interval' => self::INTERVAL_S, 'display' => 'Every minute (Print Gateway)'];
            return $s;
        });
        // Once Action Scheduler is ready (init), the recurring run is kept there.
        // Checked at most once an hour: the check is a query on Action Scheduler's table.
        add_action('init', static function (): void {
            if (self::uses_action_scheduler() && !get_transient('print_gateway_as_checked')) {
                self::schedule_recurring();
                set_transient('print_gateway_as_checked', 1, HOUR_IN_SECONDS);
            }
        }, 20);
    }

    /**
     * Action Scheduler (bundled with WooCommerce) is used once it is ready: its data store exists
     * only from `init` on, so a capture earlier in a request nudges WP-Cron instead. Both run the
     * same hook, and claims keep two runs from sending the same rows.
     */
    public static function uses_action_scheduler(): bool
    {
        return function_exists('as_schedule_recurring_action') && function_exists('as_schedule_single_action')
            && (function_exists('as_has_scheduled_action') || function_exists('as_next_scheduled_action'))
            && did_action('init') > 0;
    }

    private static function as_pending(array $args): bool
    {
        if (function_exists('as_has_scheduled_action')) {  // Action Scheduler 3.3 and newer
            return as_has_scheduled_action(self::HOOK, $args, self::AS_GROUP);
        }
        return as_next_scheduled_action(self::HOOK, $args, self::AS_GROUP) !== false;
    }

    public static function schedule_recurring(): void
    {
        if (self::uses_action_scheduler()) {
            if (!self::as_pending([])) {
                as_schedule_recurring_action(time(), self::INTERVAL_S, self::HOOK, [], self::AS_GROUP);
            }
            return;
        }
        add_filter('cron_schedules', static function (array $s): array {
            $s[self::SCHEDULE] = ['interval' => self::INTERVAL_S, 'display' => 'Every minute (Print Gateway)'];
            return $s;
        });
        if (!wp_next_scheduled(self::HOOK)) {
            wp_schedule_event(time(), self::SCHEDULE, self::HOOK);
        }
    }

    public static function unschedule_all(): void
    {
        if (function_exists('as_unschedule_all_actions')) {
            as_unschedule_all_actions(self::HOOK, [], self::AS_GROUP);
        }
        wp_clear_scheduled_hook(self::HOOK);
        wp_clear_scheduled_hook(self::HOOK, ['soon']);
        delete_transient('print_gateway_as_checked');
    }

    /**
     * Called after each capture: makes sure a run comes soon. It costs a lookup in the cached
     * cron array, and one write of it for the first event after each run.
     */
    public static function nudge(?int $when = null): void
    {
        static $nudged = false;  // one check per request is enough for "a run comes soon"
        if ($when === null) {
            if ($nudged) {
                return;
            }
            $nudged = true;
        }
        $when ??= time();
        if (self::uses_action_scheduler()) {
            if (!self::as_pending(['soon'])) {
                as_schedule_single_action($when, self::HOOK, ['soon'], self::AS_GROUP);
            }
            return;
        }
        if (!wp_next_scheduled(self::HOOK, ['soon'])) {
            wp_schedule_single_event($when, self::HOOK, ['soon']);
        }
    }

    public static function run_from_scheduler($why = null): void
    {
        self::run(false);
    }

    /**
     * One drain run. Returns what it did: sent, acked, refused, released, skipped (backoff).
     *
     * @return array<string, mixed>
     */
    public static function run(bool $force = false): array
    {
        $settings = Print_Gateway_Settings::get();
        $state = Print_Gateway_Settings::state();
        $out = ['acked' => 0, 'refused' => 0, 'released' => 0, 'batches' => 0, 'skipped' => false, 'error' => null];
        if (!$force && time() < (int) $state['next_attempt']) {
            $out['skipped'] = true;
            self::nudge((int) $state['next_attempt']);
            return $out;
        }
        Print_Gateway_Outbox::prune((int) $settings['prune_after_hours']);
        $deadline = microtime(true) + self::TIME_BUDGET_S;
        $client = null;
        while (microtime(true) < $deadline) {
            $token = bin2hex(random_bytes(16));
            $rows = Print_Gateway_Outbox::claim($token, (int) $settings['batch_size']);
            if ($rows === []) {
                break;
            }
            $out['batches']++;
            $client ??= Print_Gateway_Settings::client();
            $error = self::send_batch($client, $rows, $token, $out);
            if ($error !== null) {
                $out['error'] = $error;
                break;
            }
        }
        $client?->close();
        if ($out['error'] === null && microtime(true) >= $deadline) {
            self::nudge();  // out of time with rows perhaps left: the next run comes at once
        }
        if ($out['error'] !== null) {
            $failures = (int) $state['failures'] + 1;
            $delay = self::backoff($failures, (int) $settings['backoff_base_s'], (int) $settings['backoff_max_s']);
            Print_Gateway_Settings::update_state([
                'last_error' => $out['error'],
                'last_error_at' => time(),
                'failures' => $failures,
                'next_attempt' => time() + $delay,
            ]);
            self::nudge(time() + $delay);
        } elseif ($out['batches'] > 0 || (int) $state['failures'] > 0) {
            Print_Gateway_Settings::update_state(['failures' => 0, 'next_attempt' => 0]);
        }
        return $out;
    }

    /**
     * Exponential backoff with "equal jitter": half the delay fixed, half random, so that many
     * sites that lost the same gateway do not all come back in the same second.
     */
    public static function backoff(int $failures, int $base, int $max): int
    {
        $delay = min($max, $base * (2 ** min(30, max(0, $failures - 1))));
        return (int) ceil($delay / 2 + random_int(0, (int) ceil($delay / 2)));
    }

    /**
     * @param list<object> $rows
     * @param array<string, mixed> $out
     * @return ?string an error that should stop this run (and back off), or null
     */
    private static function send_batch(PrintGateway\Client $client, array $rows, string $token, array &$out): ?string
    {
        $error = null;
        try {
            $result = $client->sendLines(array_map(static fn ($r) => $r->payload, $rows));
        } catch (GatewayException $e) {
            $result = $e->partial;
            $error = $e->getMessage();
        }
        $last_seq = null;
        $release = [];
        $transient = null;
        foreach ($rows as $i => $row) {
            $reply = $result?->replies[$i] ?? null;
            if ($reply instanceof Ack) {
                Print_Gateway_Outbox::ack((int) $row->id, $token, $reply->seq);
                $last_seq = max($last_seq ?? 0, $reply->seq);
                $out['acked']++;
            } elseif ($reply instanceof Refusal && !$reply->isTransient()) {
                Print_Gateway_Outbox::refuse((int) $row->id, $token, $reply->error . ': ' . $reply->detail);
                $out['refused']++;
            } else {
                if ($reply instanceof Refusal) {
                    $transient = $reply->error . ': ' . $reply->detail;
                }
                $release[] = (int) $row->id;
            }
        }
        Print_Gateway_Outbox::release($release, $token, $error ?? $transient, $result !== null && $result->count() > 0);
        $out['released'] += count($release);
        if ($last_seq !== null) {
            Print_Gateway_Settings::update_state(['last_seq' => $last_seq, 'last_ack_at' => time()]);
        }
        return $error ?? ($transient !== null ? "gateway asked to retry later ($transient)" : null);
    }
}
