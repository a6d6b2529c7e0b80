<?php
// The real `gateway run` from the repository's .venv, on a free loopback port with its own state.
// Every wait polls against a deadline; nothing sleeps a fixed time.
declare(strict_types=1);

namespace PrintGateway\Tests\Support;

final class GatewayProcess
{
    /** Start-up of the gateway (Python import, ledger open) on a loaded 2-core machine. */
    private const START_TIMEOUT_S = 15.0;
    private const POLL_US = 20000;

    public readonly string $dir;
    public readonly string $configPath;
    public readonly int $port;
    public ?int $tlsPort = null;
    /** @var resource|null */
    private $proc = null;

    /** @param array<string, mixed> $overrides merged into the configuration (JSON is YAML) */
    public function __construct(array $overrides = [], bool $start = true)
    {
        $this->dir = self::tempDir('pgw-php-');
        $this->port = self::freePort();
        $config = [
            'state_dir' => $this->dir . '/state',
            'ingest' => ['listen' => ["127.0.0.1:{$this->port}"]],
            'log' => ['level' => 'info'],
            // Test machines often have no NTP state; the gateway's own tests cover the check.
            'clock' => ['check_sync' => false],
        ];
        if (isset($overrides['ingest']['tls'])) {
            $this->tlsPort = self::freePort();
            $overrides['ingest']['tls']['listen'] = ["127.0.0.1:{$this->tlsPort}"];
        }
        $config = array_replace_recursive($config, $overrides);
        $this->configPath = $this->dir . '/gateway.yaml';
        file_put_contents($this->configPath, json_encode($config, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES));
        if ($start) {
            $this->start();
        }
    }

    public static function repoRoot(): string
    {
        return dirname(__DIR__, 4);
    }

    public static function gatewayBin(): string
    {
        $bin = getenv('PGW_GATEWAY_BIN') ?: self::repoRoot() . '/.venv/bin/gateway';
        if (!is_executable($bin)) {
            throw new \RuntimeException("no gateway at $bin: run `make test-php` (it builds .venv)");
        }
        return $bin;
    }

    public static function tempDir(string $prefix): string
    {
        $dir = sys_get_temp_dir() . '/' . $prefix . bin2hex(random_bytes(6));
        mkdir($dir, 0700, true);
        return $dir;
    }

    public static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        if ($s === false) {
            throw new \RuntimeException("cannot bind a free port: $errstr");
        }
        $name = stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    public function start(): void
    {
        if ($this->running()) {
            throw new \LogicException('the gateway is already running');
        }
        $cmd = [self::gatewayBin(), 'run', '--config', $this->configPath];
        $this->proc = proc_open($cmd, [
            0 => ['file', '/dev/null', 'r'],
            1 => ['file', $this->dir . '/gateway.stdout.log', 'a'],
            2 => ['file', $this->dir . '/gateway.stderr.log', 'a'],
        ], $pipes, self::repoRoot());
        if ($this->proc === false) {
            throw new \RuntimeException('cannot start the gateway');
        }
        $deadline = microtime(true) + self::START_TIMEOUT_S;
        $ports = array_filter([$this->port, $this->tlsPort]);
        while (true) {
            if (!$this->running()) {
                throw new \RuntimeException("gateway exited during start-up\n" . $this->logText());
            }
            $ready = true;
            foreach ($ports as $p) {
                $s = @stream_socket_client("tcp://127.0.0.1:$p", $errno, $errstr, 1.0);
                if ($s === false) {
                    $ready = false;
                    break;
                }
                fclose($s);
            }
            if ($ready) {
                return;
            }
            if (microtime(true) > $deadline) {
                $this->kill();
                throw new \RuntimeException("gateway not accepting after 15 s\n" . $this->logText());
            }
            usleep(self::POLL_US);
        }
    }

    public function running(): bool
    {
        return $this->proc !== null && proc_get_status($this->proc)['running'];
    }

    public function pid(): int
    {
        return proc_get_status($this->proc)['pid'];
    }

    /** SIGTERM (or $signal) and wait (bounded) for the exit; returns the exit code. */
    public function stop(int $signal = 15, float $timeout = 15.0): int
    {
        if ($this->proc === null) {
            return -1;
        }
        $status = proc_get_status($this->proc);
        if ($status['running']) {
            proc_terminate($this->proc, $signal);
            $deadline = microtime(true) + $timeout;
            while (($status = proc_get_status($this->proc))['running']) {
                if (microtime(true) > $deadline) {
                    proc_terminate($this->proc, 9);
                    throw new \RuntimeException("gateway did not exit within $timeout s\n" . $this->logText());
                }
                usleep(self::POLL_US);
            }
        }
        proc_close($this->proc);
        $this->proc = null;
        return $status['signaled'] ? 128 + $status['termsig'] : $status['exitcode'];
    }

    public function kill(): int
    {
        return $this->stop(9);
    }

    public function restart(): void
    {
        $this->stop();
        $this->start();
    }

    public function logText(): string
    {
        $out = '';
        foreach (['gateway.stdout.log', 'gateway.stderr.log'] as $f) {
            $out .= "--- $f ---\n" . @file_get_contents($this->dir . '/' . $f) . "\n";
        }
        return $out;
    }

    /** `gateway export`: one array per ledger entry. @return list<array<string, mixed>> */
    public function export(): array
    {
        $cmd = [self::gatewayBin(), 'export', '--config', $this->configPath];
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        $code = proc_close($p);
        if ($code !== 0) {
            throw new \RuntimeException("gateway export exited with $code: $err");
        }
        $entries = [];
        foreach (explode("\n", $out) as $line) {
            if (trim($line) !== '') {
                $entries[] = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
            }
        }
        return $entries;
    }

    /** The event entries of the ledger. @return list<array<string, mixed>> */
    public function events(): array
    {
        return array_values(array_filter($this->export(), static fn ($e) => $e['kind'] === 'event'));
    }

    public function __destruct()
    {
        if ($this->running()) {
            $this->stop(9);
        }
        self::removeTree($this->dir);
    }

    public static function removeTree(string $dir): void
    {
        if (!is_dir($dir) || is_link($dir)) {
            @unlink($dir);
            return;
        }
        foreach (scandir($dir) as $name) {
            if ($name !== '.' && $name !== '..') {
                self::removeTree("$dir/$name");
            }
        }
        @rmdir($dir);
    }
}
