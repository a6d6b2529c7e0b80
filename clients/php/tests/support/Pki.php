<?php
// A throw-away CA and a server certificate for 127.0.0.1, made with openssl like the gateway's tests.
declare(strict_types=1);

namespace PrintGateway\Tests\Support;

final class Pki
{
    private static ?string $dir = null;

    /** The directory holding ca.pem, server.pem/.key, client.pem/.key (CN=shop), other-ca.pem (made once per run). */
    public static function dir(): string
    {
        if (self::$dir !== null) {
            return self::$dir;
        }
        $d = GatewayProcess::tempDir('pgw-pki-');
        register_shutdown_function(static fn () => GatewayProcess::removeTree($d));
        foreach (['ca', 'other-ca'] as $ca) {
            self::openssl($d, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$ca.key",
                '-out', "$ca.pem", '-days', '2', '-subj', "/CN=$ca");
        }
        self::openssl($d, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out',
            'server.csr', '-subj', '/CN=gateway');
        file_put_contents("$d/server.ext", "subjectAltName=IP:127.0.0.1,DNS:gateway.test\n");
        self::openssl($d, 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
            '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
        self::openssl($d, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out',
            'client.csr', '-subj', '/CN=shop');
        file_put_contents("$d/client.ext", "extendedKeyUsage=clientAuth\n");
        self::openssl($d, 'x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
            '-CAcreateserial', '-out', 'client.pem', '-days', '2', '-extfile', 'client.ext');
        return self::$dir = $d;
    }

    private static function openssl(string $cwd, string ...$args): void
    {
        $p = proc_open(['openssl', ...$args], [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'],
            2 => ['pipe', 'w']], $pipes, $cwd);
        stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        if (proc_close($p) !== 0) {
            throw new \RuntimeException("openssl failed: $err");
        }
    }
}
