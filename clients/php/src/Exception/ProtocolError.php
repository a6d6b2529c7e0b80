<?php
// The gateway answered something this client cannot understand (not a reply line, wrong count).
declare(strict_types=1);

namespace PrintGateway\Exception;

final class ProtocolError extends GatewayException
{
    public function isTransient(): bool
    {
        return false;
    }
}
