<?php
// A positive reply: the event is durable in the gateway's ledger as entry `seq`.
declare(strict_types=1);

namespace PrintGateway;

final class Ack
{
    /**
     * @param bool $duplicate the gateway had this app+event_id already; `seq` is the original entry
     * @param list<string> $flags validation flags the gateway recorded (the event is stored anyway)
     */
    public function __construct(
        public readonly int $seq,
        public readonly string $eventId,
        public readonly bool $duplicate = false,
        public readonly array $flags = [],
    ) {
    }
}
