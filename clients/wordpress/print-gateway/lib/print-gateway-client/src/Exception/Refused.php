<?php
// The gateway refused an event (or the hello): its error code, its detail and the event's index.
declare(strict_types=1);

namespace PrintGateway\Exception;

use PrintGateway\Refusal;

final class Refused extends GatewayException
{
    /**
     * @param ?int $index position of the event in the batch; null when the hello was refused
     */
    public function __construct(
        string $host,
        int $port,
        public readonly string $error,
        public readonly string $detail,
        public readonly ?int $index,
    ) {
        $where = $index === null ? 'hello' : "event $index";
        parent::__construct($host, $port, "$where refused: $error" . ($detail !== '' ? " ($detail)" : ''));
    }

    public function errorCode(): string
    {
        return $this->error;
    }

    public function isTransient(): bool
    {
        return Refusal::codeIsTransient($this->error);
    }
}
