<?php
// PHPUnit bootstrap: the library's own autoloader plus the test support classes.
declare(strict_types=1);

require dirname(__DIR__) . '/autoload.php';
require __DIR__ . '/support/GatewayProcess.php';
require __DIR__ . '/support/Pki.php';
require __DIR__ . '/support/FakeGateway.php';
