<?php
// Connecting, writing or waiting for a reply took longer than the configured timeout.
declare(strict_types=1);

namespace PrintGateway\Exception;

final class Timeout extends GatewayException
{
}
