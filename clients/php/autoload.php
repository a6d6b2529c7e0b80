<?php
// Drop-in autoloader for sites without Composer: maps PrintGateway\X\Y to src/X/Y.php (PSR-4).
declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'PrintGateway\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
