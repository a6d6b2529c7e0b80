<?php
// The outcome of one batch: for each event (by index) an Ack, a Refusal, or nothing yet.
declare(strict_types=1);

namespace PrintGateway;

use PrintGateway\Exception\Refused;

final class BatchResult
{
    /** @var array<int, Ack|Refusal> replies so far, keyed by the event's index in the batch */
    public array $replies = [];

    /**
     * @param list<string> $eventIds the event_id of every event, in batch order
     */
    public function __construct(
        public readonly string $host,
        public readonly int $port,
        public readonly array $eventIds,
    ) {
    }

    public function count(): int
    {
        return count($this->eventIds);
    }

    /** Every event acknowledged (none refused, none left without a reply). */
    public function ok(): bool
    {
        return count($this->acks()) === $this->count();
    }

    /** @return array<int, Ack> */
    public function acks(): array
    {
        return array_filter($this->replies, static fn ($r) => $r instanceof Ack);
    }

    /** @return array<int, Refusal> */
    public function refusals(): array
    {
        return array_filter($this->replies, static fn ($r) => $r instanceof Refusal);
    }

    /** Indexes of the events that got no reply (the connection ended first). @return list<int> */
    public function unanswered(): array
    {
        return array_values(array_diff(array_keys($this->eventIds), array_keys($this->replies)));
    }

    /** Throws Refused for the first refused event, if any. */
    public function throwIfRefused(): void
    {
        foreach ($this->replies as $reply) {
            if ($reply instanceof Refusal) {
                $e = new Refused($this->host, $this->port, $reply->error, $reply->detail, $reply->index);
                $e->partial = $this;
                throw $e;
            }
        }
    }
}
