<?php
// Base of every error the client raises: always names the gateway (host, port) and what failed.
declare(strict_types=1);

namespace PrintGateway\Exception;

use PrintGateway\BatchResult;

class GatewayException extends \RuntimeException
{
    /** What had been acknowledged or refused before the failure (null outside a batch). */
    public ?BatchResult $partial = null;

    public function __construct(
        public readonly string $host,
        public readonly int $port,
        string $what,
        ?\Throwable $previous = null,
    ) {
        parent::__construct(sprintf('print gateway %s:%d: %s', $host, $port, $what), 0, $previous);
    }

    /** Worth trying again later with the same events (and the same event_ids). */
    public function isTransient(): bool
    {
        return true;
    }
}
