<?php
// The TCP or TLS connection could not be made, or broke (reset, closed early, TLS failure).
declare(strict_types=1);

namespace PrintGateway\Exception;

final class ConnectionFailed extends GatewayException
{
}
