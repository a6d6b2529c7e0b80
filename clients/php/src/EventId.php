<?php
// event_id values: generating UUID v4s and checking client-chosen ids (1-128 printable ASCII).
declare(strict_types=1);

namespace PrintGateway;

final class EventId
{
    /** The gateway's limit for an event_id (docs/protocol.md): long enough for any UUID or URN. */
    public const MAX_LENGTH = 128;

    /**
     * A random UUID v4 with no run of 13 characters from [0-9 -]. The gateway does not search
     * event_id for card numbers, but a copy of the id elsewhere in an event (a reference field,
     * a log message) is searched: about one random UUID in 160 holds a Luhn-valid run there
     * ("aa385685-4749-4828-852e-..." would read "aa[redacted card ****8852]e-..."), so ids that
     * could be rewritten are drawn again and every copy of an id stays equal to it.
     */
    public static function uuid4(): string
    {
        do {
            $id = self::rawUuid4();
        } while (preg_match('/[0-9 -]{13}/', $id) === 1);
        return $id;
    }

    private static function rawUuid4(): string
    {
        $b = random_bytes(16);
        $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);  // version 4
        $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);  // RFC 4122 variant
        $h = bin2hex($b);
        return sprintf('%s-%s-%s-%s-%s', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
            substr($h, 16, 4), substr($h, 20, 12));
    }

    public static function isValid(mixed $id): bool
    {
        return is_string($id) && preg_match('/\A[\x20-\x7e]{1,' . self::MAX_LENGTH . '}\z/', $id) === 1;
    }
}
