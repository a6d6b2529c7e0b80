<?php
// A negative reply for one event: the gateway's error code and detail, and whether to retry.
declare(strict_types=1);

namespace PrintGateway;

final class Refusal
{
    /**
     * Codes that say "not now" rather than "never": the same event may succeed later.
     * `retry` is sent while the gateway's event_id index is not ready; the others close the
     * connection because of load or disk space (docs/protocol.md, "Error codes").
     */
    public const TRANSIENT = [
        'retry',
        'disk_full',
        'rate_limited',
        'too_many_connections',
        'too_many_connections_from_source',
        'idle_timeout',
    ];

    public function __construct(
        public readonly int $index,
        public readonly string $eventId,
        public readonly string $error,
        public readonly string $detail,
    ) {
    }

    public static function codeIsTransient(string $code): bool
    {
        return in_array($code, self::TRANSIENT, true);
    }

    public function isTransient(): bool
    {
        return self::codeIsTransient($this->error);
    }
}
