<?php
// What the plugin captures: WordPress and WooCommerce hooks turned into events in the audit-log
// schema (event_type, timestamp, user_id, username, action, object_type, object_id, old_value,
// new_value, context), secrets removed, written to the outbox. No network I/O happens here.
declare(strict_types=1);

final class Print_Gateway_Capture
{
    /**
     * Options never captured: they change on every request, on every cron or drain run, or hold
     * session data, so capturing them would flood the outbox or feed the capture with itself.
     * Exact names and prefixes (a trailing *); the filter `print_gateway_skip_option` adds more.
     */
    public const SKIPPED_OPTIONS = [
        'cron', 'doing_cron', 'rewrite_rules', 'recently_activated', 'recently_edited',
        'print_gateway_*',
        '_transient_*', '_site_transient_*', '*_session*', '_wc_session_*',
        'action_scheduler_*', 'actionscheduler_*', '*_lock', 'auto_updater.lock', 'core_updater.lock',
        'recovery_mode_*', 'recovery_keys', 'db_upgraded', 'can_compress_scripts', 'fresh_site',
        'wc_*_last_run', 'woocommerce_admin_*_last_run', 'jetpack_*_sync_*', 'finished_splitting_shared_terms',
    ];

    /**
     * Keys whose values are never sent, at any depth of old and new values: password hashes,
     * application passwords, session tokens, activation keys, and anything named like a secret.
     */
    public const SECRET_KEY_PATTERN = '/pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|auth[_-]?key|salt'
        . '|nonce|activation[_-]?key|session|credential|license[_-]?key|application[_-]?passwords/i';

    /** Options whose names look like secrets: the change is captured, the values are not sent. */
    public const SECRET_OPTION_PATTERN = self::SECRET_KEY_PATTERN;

    public const REDACTED = '[not sent: secret]';

    /** Post types that are not content: revisions and editor internals. */
    public const SKIPPED_POST_TYPES = [
        'revision', 'customize_changeset', 'oembed_cache', 'user_request', 'wp_global_styles',
        'nav_menu_item', 'custom_css', 'scheduled-action',
        // WooCommerce orders and subscriptions as posts: the WooCommerce hooks describe them.
        'shop_order', 'shop_order_refund', 'shop_subscription',
    ];

    /** Post fields compared by post_updated (content is long: it is cut to STRING_LIMIT). */
    public const POST_FIELDS = [
        'post_title', 'post_content', 'post_excerpt', 'post_status', 'post_name', 'post_author',
        'post_parent', 'menu_order', 'post_password', 'comment_status', 'ping_status', 'post_date_gmt',
    ];

    /** User fields compared by profile_update; user_pass only named in changed_fields, never its hash. */
    public const USER_FIELDS = ['user_login', 'user_email', 'user_url', 'user_nicename', 'display_name', 'user_status'];

    /**
     * Strings in old/new values are cut to this many bytes, and an event's JSON that is still
     * longer than MAX_EVENT_BYTES has its values replaced by a note: the gateway refuses lines
     * over 65536 bytes by default (max_line_bytes), and a refused event is never delivered.
     */
    public const STRING_LIMIT = 8192;
    public const MAX_EVENT_BYTES = 60000;

    /** @var array<string, bool> groups switched on */
    private static array $groups = [];

    /** @var ?array<int, float> seconds spent in capture callbacks, when profiling (tests) */
    public static ?array $profile = null;

    public static function register(): void
    {
        self::$groups = array_fill_keys((array) Print_Gateway_Settings::get()['capture'], true);
        $on = static function (string $group, string $hook, string $method, int $args, int $prio = 10): void {
            if (isset(self::$groups[$group])) {
                add_action($hook, static function (...$a) use ($method) {
                    $t0 = self::$profile !== null ? hrtime(true) : 0;
                    try {
                        self::$method(...$a);
                    } catch (\Throwable $e) {
                        // Capture must never break the page; the failure is logged for the admin.
                        error_log('print-gateway: capture failed in ' . current_filter() . ': ' . $e->getMessage());
                    }
                    if (self::$profile !== null) {
                        self::$profile[] = (hrtime(true) - $t0) / 1e9;
                    }
                    return $a[0] ?? null;
                }, $prio, $args);
            }
        };
        $on('users', 'user_register', 'user_registered', 2);
        $on('users', 'profile_update', 'user_updated', 3);
        $on('users', 'set_user_role', 'user_role_changed', 3);
        $on('users', 'delete_user', 'user_deleted', 3);
        $on('users', 'wp_login', 'user_logged_in', 2);
        $on('users', 'wp_login_failed', 'user_login_failed', 2);
        $on('posts', 'transition_post_status', 'post_status_changed', 3);
        $on('posts', 'post_updated', 'post_updated', 3);
        $on('posts', 'trashed_post', 'post_trashed', 2);
        $on('posts', 'before_delete_post', 'post_deleted', 2);
        $on('options', 'added_option', 'option_added', 2);
        $on('options', 'updated_option', 'option_updated', 3);
        $on('options', 'deleted_option', 'option_deleted', 1);
        $on('plugins', 'activated_plugin', 'plugin_activated', 2);
        $on('plugins', 'deactivated_plugin', 'plugin_deactivated', 2);
        $on('woocommerce', 'woocommerce_order_status_changed', 'order_status_changed', 4);
        $on('subscriptions', 'woocommerce_subscription_status_updated', 'subscription_status_updated', 3);
        $on('subscriptions', 'woocommerce_subscription_renewal_payment_complete', 'subscription_renewal_paid', 2);
        $on('subscriptions', 'woocommerce_subscription_status_cancelled', 'subscription_cancelled', 1);
        $on('subscriptions', 'woocommerce_subscription_status_expired', 'subscription_expired', 1);
        $on('custom', 'print_gateway_event', 'custom_event', 1);
    }

    // ---- users

    private static function user_registered(int $user_id, $userdata = []): void
    {
        $u = get_userdata($user_id);
        self::record('audit', 'user_registered', 'user', $user_id, null, $u ? self::user_view($u) : null);
    }

    private static function user_updated(int $user_id, $old_user, $userdata = []): void
    {
        $new = get_userdata($user_id);
        if (!$new || !$old_user instanceof WP_User) {
            return;
        }
        $old_v = [];
        $new_v = [];
        foreach (self::USER_FIELDS as $f) {
            if ((string) $old_user->$f !== (string) $new->$f) {
                $old_v[$f] = $old_user->$f;
                $new_v[$f] = $new->$f;
            }
        }
        $changed = array_keys($new_v);
        if ($old_user->user_pass !== $new->user_pass) {
            // Only the fact: the hashes are never sent. A field name in a list, not a key, so
            // that the gateway's own key redaction (*password*) leaves the event as it is.
            $changed[] = 'user_pass';
        }
        if ($changed === []) {
            return;  // saved without a change to what is captured (meta-only edits, last login)
        }
        self::record('audit', 'user_updated', 'user', $user_id, $old_v, $new_v, ['changed_fields' => $changed]);
    }

    private static function user_role_changed(int $user_id, $role, $old_roles = []): void
    {
        self::record('audit', 'user_role_changed', 'user', $user_id, array_values((array) $old_roles),
            $role === '' ? [] : [(string) $role]);
    }

    private static function user_deleted(int $user_id, $reassign = null, $user = null): void
    {
        $u = $user instanceof WP_User ? $user : get_userdata($user_id);
        self::record('audit', 'user_deleted', 'user', $user_id, $u ? self::user_view($u) : null,
            $reassign ? ['posts_reassigned_to' => (int) $reassign] : null);
    }

    private static function user_logged_in(string $login, $user = null): void
    {
        $id = $user instanceof WP_User ? $user->ID : 0;
        self::record('audit', 'user_logged_in', 'user', $id, null, null,
            ['user_id' => $id, 'username' => $login]);
    }

    private static function user_login_failed(string $login, $error = null): void
    {
        $reason = $error instanceof WP_Error ? $error->get_error_code() : null;
        // The attempted name is what the attacker typed: sent as-is, it is the point of the event.
        self::record('audit', 'user_login_failed', 'user', null, null, $reason ? ['reason' => $reason] : null,
            ['username' => $login]);
    }

    /** @return array<string, mixed> */
    private static function user_view(WP_User $u): array
    {
        return ['user_login' => $u->user_login, 'user_email' => $u->user_email,
            'display_name' => $u->display_name, 'roles' => array_values($u->roles)];
    }

    // ---- posts

    private static function skip_post($post): bool
    {
        return !$post instanceof WP_Post || in_array($post->post_type, self::SKIPPED_POST_TYPES, true)
            || wp_is_post_revision($post) || wp_is_post_autosave($post);
    }

    private static function post_status_changed($new, $old, $post): void
    {
        // Same status is an edit (post_updated has it); 'new' to 'auto-draft' is the editor opening.
        if ($new === $old || self::skip_post($post) || $new === 'auto-draft') {
            return;
        }
        self::record('audit', 'post_status_changed', $post->post_type, $post->ID,
            ['post_status' => $old], ['post_status' => $new, 'post_title' => $post->post_title]);
    }

    private static function post_updated(int $post_id, $after, $before): void
    {
        if (self::skip_post($after) || !$before instanceof WP_Post || $after->post_status === 'auto-draft') {
            return;
        }
        $old_v = [];
        $new_v = [];
        $changed = [];
        foreach (self::POST_FIELDS as $f) {
            if ($f === 'post_status') {
                continue;  // transition_post_status records status changes
            }
            if ((string) $before->$f !== (string) $after->$f) {
                $changed[] = $f;
                if ($f !== 'post_password') {  // the fact that it changed, never the password
                    $old_v[$f] = $before->$f;
                    $new_v[$f] = $after->$f;
                }
            }
        }
        if ($changed === []) {
            return;
        }
        self::record('audit', 'post_updated', $after->post_type, $post_id, $old_v ?: null, $new_v ?: null,
            ['changed_fields' => $changed]);
    }

    private static function post_trashed(int $post_id, $previous_status = null): void
    {
        $post = get_post($post_id);
        if (self::skip_post($post)) {
            return;
        }
        self::record('audit', 'post_trashed', $post->post_type, $post_id,
            ['post_status' => $previous_status ?? get_post_meta($post_id, '_wp_trash_meta_status', true)],
            ['post_status' => 'trash', 'post_title' => $post->post_title]);
    }

    private static function post_deleted(int $post_id, $post = null): void
    {
        $post = $post instanceof WP_Post ? $post : get_post($post_id);
        if (self::skip_post($post)) {
            return;
        }
        self::record('audit', 'post_deleted', $post->post_type, $post_id,
            ['post_status' => $post->post_status, 'post_title' => $post->post_title], null);
    }

    // ---- options

    public static function option_skipped(string $name): bool
    {
        foreach (self::SKIPPED_OPTIONS as $p) {
            if ($p === $name || (str_contains($p, '*') && fnmatch($p, $name))) {
                return true;
            }
        }
        return (bool) apply_filters('print_gateway_skip_option', false, $name);
    }

    private static function option_values(string $name, $old, $new): array
    {
        if (preg_match(self::SECRET_OPTION_PATTERN, $name)) {
            return [self::REDACTED, self::REDACTED];
        }
        return [$old, $new];
    }

    private static function option_added(string $name, $value): void
    {
        if (!self::option_skipped($name)) {
            [, $new] = self::option_values($name, null, $value);
            self::record('audit', 'option_added', 'option', $name, null, $new);
        }
    }

    private static function option_updated(string $name, $old, $value): void
    {
        if (!self::option_skipped($name)) {
            [$old, $new] = self::option_values($name, $old, $value);
            self::record('audit', 'option_updated', 'option', $name, $old, $new);
        }
    }

    private static function option_deleted(string $name): void
    {
        if (!self::option_skipped($name)) {
            self::record('audit', 'option_deleted', 'option', $name, null, null);
        }
    }

    // ---- plugins

    private static function plugin_activated(string $plugin, $network = false): void
    {
        self::record('audit', 'plugin_activated', 'plugin', $plugin, ['active' => false], ['active' => true]);
    }

    private static function plugin_deactivated(string $plugin, $network = false): void
    {
        self::record('audit', 'plugin_deactivated', 'plugin', $plugin, ['active' => true], ['active' => false]);
    }

    // ---- WooCommerce and WooCommerce Subscriptions (objects or ids, as their hooks pass them)

    private static function object_id($thing): int|string|null
    {
        if (is_object($thing) && method_exists($thing, 'get_id')) {
            return $thing->get_id();
        }
        return is_scalar($thing) ? $thing : null;
    }

    private static function order_status_changed($order_id, $from, $to, $order = null): void
    {
        self::record('order_status_changed', 'order_status_changed', 'shop_order', self::object_id($order_id),
            ['status' => (string) $from], ['status' => (string) $to]);
    }

    private static function subscription_status_updated($subscription, $new, $old): void
    {
        self::record('subscription_status_updated', 'subscription_status_updated', 'shop_subscription',
            self::object_id($subscription), ['status' => (string) $old], ['status' => (string) $new]);
    }

    private static function subscription_renewal_paid($subscription, $order = null): void
    {
        self::record('subscription_renewal_payment_complete', 'subscription_renewal_payment_complete',
            'shop_subscription', self::object_id($subscription), null,
            $order !== null ? ['renewal_order_id' => self::object_id($order)] : null);
    }

    private static function subscription_cancelled($subscription): void
    {
        self::record('subscription_cancelled', 'subscription_cancelled', 'shop_subscription',
            self::object_id($subscription), null, ['status' => 'cancelled']);
    }

    private static function subscription_expired($subscription): void
    {
        self::record('subscription_expired', 'subscription_expired', 'shop_subscription',
            self::object_id($subscription), null, ['status' => 'expired']);
    }

    // ---- the site's own events

    private static function custom_event($event): void
    {
        if (!is_array($event)) {
            return;
        }
        // The site's fields go through the same secret filter as old and new values.
        self::enqueue(self::scrub($event) + ['event_type' => 'custom']);
    }

    // ---- building and storing an event

    /**
     * @param array<string, mixed> $extra more fields, or overrides of user_id/username (login
     *     events name the user who is not yet the current user)
     */
    public static function record(string $event_type, string $action, string $object_type, $object_id,
        $old, $new, array $extra = []): void
    {
        $user = wp_get_current_user();
        self::enqueue([
            'event_type' => $event_type,
            'action' => $action,
            'user_id' => $user->ID ?: null,
            'username' => $user->ID ? $user->user_login : null,
            'object_type' => $object_type,
            'object_id' => $object_id,
            'old_value' => $old,
            'new_value' => $new,
        ], $extra);
    }

    /** @param array<string, mixed> $event */
    private static function enqueue(array $event, array $override = []): void
    {
        $event = array_merge($event, $override);
        $event['event_id'] ??= PrintGateway\EventId::uuid4();
        if (!PrintGateway\EventId::isValid($event['event_id'])) {
            $event['event_id'] = PrintGateway\EventId::uuid4();
        }
        $event['timestamp'] ??= self::now();
        $event['context'] = ($event['context'] ?? []) + self::context();
        foreach (['old_value', 'new_value'] as $k) {
            if (array_key_exists($k, $event)) {
                $event[$k] = self::scrub($event[$k]);
            }
        }
        $json = self::encode($event);
        if (strlen($json) > self::MAX_EVENT_BYTES) {
            foreach (['old_value', 'new_value'] as $k) {
                if (isset($event[$k])) {
                    $event[$k] = sprintf('[not sent: %d bytes of JSON]', strlen(self::encode($event[$k])));
                }
            }
            $json = self::encode($event);
        }
        Print_Gateway_Outbox::add($event['event_id'], $json);
        Print_Gateway_Drain::nudge();
    }

    private static function encode($value): string
    {
        return json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION
            | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
    }

    /** RFC 3339 UTC with microseconds, as the gateway's timestamp check wants. */
    private static function now(): string
    {
        $t = microtime(true);
        return gmdate('Y-m-d\TH:i:s', (int) $t) . sprintf('.%06dZ', (int) (fmod($t, 1.0) * 1e6));
    }

    /** @return array<string, mixed> */
    private static function context(): array
    {
        return [
            'ip' => isset($_SERVER['REMOTE_ADDR']) ? (string) $_SERVER['REMOTE_ADDR'] : null,
            // 512 bytes holds any real browser's user agent; longer ones are junk or attacks.
            'user_agent' => isset($_SERVER['HTTP_USER_AGENT']) ? substr((string) $_SERVER['HTTP_USER_AGENT'], 0, 512) : null,
            'hook' => current_filter() ?: null,
            'site_url' => site_url(),
        ];
    }

    /** Old/new values made JSON-friendly: secrets removed, long strings cut, objects as arrays. */
    public static function scrub($value, int $depth = 0)
    {
        // 16 levels: options are rarely deeper; the gateway refuses beyond 32 (too_deep).
        if ($depth > 16) {
            return '[not sent: nested too deep]';
        }
        if (is_object($value)) {
            $value = $value instanceof JsonSerializable ? $value->jsonSerialize() : get_object_vars($value);
        }
        if (is_array($value)) {
            $out = [];
            foreach ($value as $k => $v) {
                $out[$k] = is_string($k) && preg_match(self::SECRET_KEY_PATTERN, $k) ? self::REDACTED : self::scrub($v, $depth + 1);
            }
            return $out;
        }
        if (is_string($value) && strlen($value) > self::STRING_LIMIT) {
            // mb_strcut keeps whole UTF-8 characters; without mbstring, JSON encoding later
            // substitutes a cut character (JSON_INVALID_UTF8_SUBSTITUTE).
            $cut = function_exists('mb_strcut') ? mb_strcut($value, 0, self::STRING_LIMIT, 'UTF-8')
                : substr($value, 0, self::STRING_LIMIT);
            return $cut . sprintf('... [cut: %d bytes]', strlen($value));
        }
        if (is_float($value) && !is_finite($value)) {
            return (string) $value;
        }
        return $value;
    }
}
