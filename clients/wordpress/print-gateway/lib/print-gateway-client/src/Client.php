<?php
// An acknowledged-mode connection to a Print Gateway: hello (app, token), TLS, pipelined batches.
// Every event carries an event_id so that a resend after a lost acknowledgement can be recognised.
declare(strict_types=1);

namespace PrintGateway;

use PrintGateway\Exception\ConnectionFailed;
use PrintGateway\Exception\GatewayException;
use PrintGateway\Exception\ProtocolError;
use PrintGateway\Exception\Refused;
use PrintGateway\Exception\Timeout;

final class Client
{
    /** The gateway's default ingest port (docs/protocol.md, "Transport"). */
    public const DEFAULT_PORT = 50001;

    /**
     * A gateway on the local network accepts in well under a millisecond; half a second covers a
     * busy Pi and Wi-Fi while keeping a dead gateway from stalling the caller for long.
     */
    public const DEFAULT_CONNECT_TIMEOUT = 0.5;

    /**
     * How long one write, or the wait for the next reply, may take. A reply comes after one or two
     * fdatasyncs (2-50 ms on an SD card, longer with min_sync_interval_ms); 5 s is far beyond that
     * and still short enough for a cron job.
     */
    public const DEFAULT_IO_TIMEOUT = 5.0;

    /**
     * Events written before their replies are read. 256 replies are about 6 KiB, far below the
     * gateway's 256 KiB reply backlog, so the gateway never stops reading us while we write, and
     * one window costs one round trip and one group commit.
     */
    public const DEFAULT_WINDOW = 256;

    /** Replies after which the gateway closes the connection (docs/protocol.md, "Error codes"). */
    private const CLOSING_CODES = [
        'bad_hello', 'bad_token', 'token_required', 'rate_limited', 'disk_full',
        'too_many_connections', 'too_many_connections_from_source', 'idle_timeout',
    ];

    private const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
        | JSON_PRESERVE_ZERO_FRACTION | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR;

    /** @var resource|null */
    private $sock = null;
    private string $buf = '';
    /** @var array<string, mixed>|null the gateway's hello reply on the current connection */
    private ?array $hello = null;

    /**
     * @param ?string $caFile with $tls: trust only this CA (certificate pinning); null: system CAs
     * @param ?string $peerName with $tls: the name the certificate must carry (default: $host)
     * @param ?\Closure $onProgress called as fn(int $answered, int $total) after every window
     */
    public function __construct(
        public readonly string $host = '127.0.0.1',
        public readonly int $port = self::DEFAULT_PORT,
        public readonly ?string $app = null,
        private readonly ?string $token = null,
        public readonly float $connectTimeout = self::DEFAULT_CONNECT_TIMEOUT,
        public readonly float $ioTimeout = self::DEFAULT_IO_TIMEOUT,
        public readonly bool $tls = false,
        public readonly ?string $caFile = null,
        public readonly ?string $peerName = null,
        public readonly ?string $certFile = null,
        public readonly ?string $keyFile = null,
        public readonly int $window = self::DEFAULT_WINDOW,
        private readonly ?\Closure $onProgress = null,
    ) {
        if ($window < 1) {
            throw new \InvalidArgumentException('window must be at least 1');
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /**
     * Connects (if not connected) and returns the gateway's hello reply: version, head_seq, conn,
     * max_line_bytes.
     *
     * @return array<string, mixed>
     */
    public function connect(): array
    {
        if ($this->connected()) {
            return $this->hello;
        }
        $this->close();
        $this->open();
        $hello = ['ack' => true];
        if ($this->app !== null) {
            $hello['app'] = $this->app;
        }
        if ($this->token !== null) {
            $hello['token'] = $this->token;
        }
        try {
            $this->write(json_encode(['hello' => $hello], self::JSON_FLAGS) . "\n");
            $line = $this->readLine();
        } catch (GatewayException $e) {
            $this->close();
            throw $e;
        }
        if ($line === null) {
            $this->close();
            throw new ConnectionFailed($this->host, $this->port, 'connection closed before the hello reply');
        }
        $reply = json_decode($line, true);
        if (is_array($reply) && isset($reply['hello']) && is_array($reply['hello'])) {
            return $this->hello = $reply['hello'];
        }
        $this->close();
        if (is_array($reply) && ($reply['ok'] ?? null) === false && is_string($reply['error'] ?? null)) {
            throw new Refused($this->host, $this->port, $reply['error'], (string) ($reply['detail'] ?? ''), null);
        }
        throw new ProtocolError($this->host, $this->port, 'unexpected hello reply: ' . substr($line, 0, 200));
    }

    /**
     * Whether the current connection is still usable. Between batches the gateway sends nothing,
     * so anything readable (its idle_timeout line, or end of stream after a restart) means it has
     * closed or is closing the connection: the next send then connects afresh.
     */
    public function connected(): bool
    {
        if ($this->sock === null || $this->hello === null) {
            return false;
        }
        $read = [$this->sock];
        $none = null;
        if ($this->buf === '' && @stream_select($read, $none, $none, 0) === 0) {
            return true;
        }
        $this->close();
        return false;
    }

    public function close(): void
    {
        if ($this->sock !== null) {
            @fclose($this->sock);
        }
        $this->sock = null;
        $this->hello = null;
        $this->buf = '';
    }

    /**
     * Adds an event_id (a new UUID v4) to an event that has none; checks one that is given.
     *
     * @param array<string, mixed> $event
     * @return array<string, mixed>
     */
    public static function withEventId(array $event): array
    {
        if (!array_key_exists('event_id', $event)) {
            $event['event_id'] = EventId::uuid4();
        } elseif (!EventId::isValid($event['event_id'])) {
            throw new \InvalidArgumentException('event_id must be 1 to 128 printable ASCII characters');
        }
        return $event;
    }

    /**
     * One JSON line for an event (event_id added when missing).
     *
     * @param array<string, mixed> $event
     */
    public static function encode(array $event): string
    {
        return json_encode(self::withEventId($event), self::JSON_FLAGS);
    }

    /** Sends one event and returns its Ack; throws Refused (index 0) if the gateway refuses it. */
    public function sendOne(array $event): Ack
    {
        $result = $this->send([$event]);
        $result->throwIfRefused();
        return $result->replies[0];
    }

    /**
     * Sends events (arrays; an event_id is added to each that has none) and waits for every reply.
     *
     * Returns when every event has an Ack or a Refusal. Throws a GatewayException (its `partial`
     * holds the replies so far) when the connection fails or ends first: the events without a
     * reply may or may not be stored, so send them again with the same event_id.
     *
     * @param list<array<string, mixed>> $events
     */
    public function send(array $events): BatchResult
    {
        $lines = [];
        $ids = [];
        foreach (array_values($events) as $i => $event) {
            if (!is_array($event)) {
                throw new \InvalidArgumentException("event $i is not an array");
            }
            $event = self::withEventId($event);
            try {
                $lines[] = json_encode($event, self::JSON_FLAGS) . "\n";
            } catch (\JsonException $e) {
                throw new \InvalidArgumentException("event $i cannot be encoded as JSON: {$e->getMessage()}", 0, $e);
            }
            $ids[] = $event['event_id'];
        }
        return $this->transmit($lines, $ids);
    }

    /**
     * Sends NDJSON lines as they are (blank lines are skipped). A line holding a JSON object
     * without an event_id gets one inserted textually, so every other byte stays the same; any
     * other line (bad JSON, not an object) is sent unchanged and gets the gateway's refusal.
     *
     * @param list<string> $lines
     */
    public function sendLines(array $lines): BatchResult
    {
        $out = [];
        $ids = [];
        foreach ($lines as $line) {
            $line = rtrim($line, "\r\n");
            if (trim($line, " \t\r") === '') {
                continue;
            }
            [$line, $id] = self::lineWithEventId($line);
            $out[] = $line . "\n";
            $ids[] = $id;
        }
        return $this->transmit($out, $ids);
    }

    /**
     * @return array{0: string, 1: string} the line (with an event_id if it is an object) and the
     *     id ('' when the line is not a JSON object or its event_id is not a string)
     */
    public static function lineWithEventId(string $line): array
    {
        try {
            $decoded = json_decode($line, false, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException) {
            return [$line, ''];
        }
        if (!$decoded instanceof \stdClass) {
            return [$line, ''];
        }
        if (property_exists($decoded, 'event_id')) {
            return [$line, is_string($decoded->event_id) ? $decoded->event_id : ''];
        }
        $id = EventId::uuid4();
        $brace = strpos($line, '{');
        $rest = substr($line, $brace + 1);
        $sep = trim($rest, " \t\r") === '}' ? '' : ',';
        return [substr($line, 0, $brace + 1) . '"event_id":"' . $id . '"' . $sep . $rest, $id];
    }

    /**
     * @param list<string> $lines each ending in "\n"
     * @param list<string> $ids
     */
    private function transmit(array $lines, array $ids): BatchResult
    {
        $result = new BatchResult($this->host, $this->port, $ids);
        if ($lines === []) {
            return $result;
        }
        try {
            $this->connect();
            $total = count($lines);
            for ($start = 0; $start < $total; $start += $this->window) {
                $end = min($total, $start + $this->window);
                $writeError = null;
                try {
                    $this->write(implode('', array_slice($lines, $start, $end - $start)));
                } catch (ConnectionFailed $e) {
                    // The gateway may have answered and closed (bad_token, disk_full, ...):
                    // read what it sent before reporting the failure.
                    $writeError = $e;
                }
                for ($i = $start; $i < $end; $i++) {
                    $line = $this->readLine();
                    if ($line === null) {
                        throw $writeError ?? new ConnectionFailed($this->host, $this->port,
                            sprintf('connection closed after %d of %d replies', count($result->replies), $total));
                    }
                    $reply = $this->parseReply($line, $i, $ids[$i]);
                    $result->replies[$i] = $reply;
                    if ($reply instanceof Refusal && in_array($reply->error, self::CLOSING_CODES, true)) {
                        throw new Refused($this->host, $this->port, $reply->error, $reply->detail, $i);
                    }
                }
                if ($writeError !== null) {
                    throw $writeError;
                }
                if ($this->onProgress !== null) {
                    ($this->onProgress)($end, $total);
                }
            }
        } catch (GatewayException $e) {
            $this->close();
            $e->partial = $result;
            throw $e;
        }
        return $result;
    }

    private function parseReply(string $line, int $index, string $eventId): Ack|Refusal
    {
        $reply = json_decode($line, true);
        if (is_array($reply) && ($reply['ok'] ?? null) === true && is_int($reply['seq'] ?? null)) {
            $flags = $reply['flags'] ?? [];
            return new Ack($reply['seq'], $eventId, ($reply['duplicate'] ?? false) === true,
                is_array($flags) ? array_values(array_filter($flags, 'is_string')) : []);
        }
        if (is_array($reply) && ($reply['ok'] ?? null) === false && is_string($reply['error'] ?? null)) {
            return new Refusal($index, $eventId, $reply['error'], (string) ($reply['detail'] ?? ''));
        }
        throw new ProtocolError($this->host, $this->port,
            "reply $index is not an acknowledgement: " . substr($line, 0, 200));
    }

    private function open(): void
    {
        $context = ['socket' => ['tcp_nodelay' => true]];
        if ($this->tls) {
            $ssl = [
                'verify_peer' => true,
                'verify_peer_name' => true,
                'peer_name' => $this->peerName ?? $this->host,
                'SNI_enabled' => true,
                'disable_compression' => true,
                // The gateway speaks TLS 1.2 or newer (docs/protocol.md, "TLS").
                'crypto_method' => STREAM_CRYPTO_METHOD_TLSv1_2_CLIENT | STREAM_CRYPTO_METHOD_TLSv1_3_CLIENT,
            ];
            if ($this->caFile !== null) {
                $ssl['cafile'] = $this->caFile;
            }
            if ($this->certFile !== null) {
                $ssl['local_cert'] = $this->certFile;
                $ssl['local_pk'] = $this->keyFile ?? $this->certFile;
            }
            $context['ssl'] = $ssl;
        }
        $host = str_contains($this->host, ':') ? '[' . $this->host . ']' : $this->host;
        $uri = ($this->tls ? 'tls' : 'tcp') . "://$host:{$this->port}";
        $warnings = [];
        set_error_handler(static function (int $no, string $msg) use (&$warnings): bool {
            $warnings[] = preg_replace('/^stream_socket_client\(\): /', '', $msg);
            return true;
        });
        $started = microtime(true);
        try {
            $sock = stream_socket_client($uri, $errno, $errstr, $this->connectTimeout,
                STREAM_CLIENT_CONNECT, stream_context_create($context));
        } finally {
            restore_error_handler();
        }
        if ($sock === false) {
            $why = trim(implode('; ', array_unique(array_filter($warnings ?: [$errstr]))));
            $elapsed = microtime(true) - $started;
            if ($errno === 110 || stripos($why, 'timed out') !== false) {
                throw new Timeout($this->host, $this->port,
                    sprintf('connect timed out after %.2f s (limit %.2f s)', $elapsed, $this->connectTimeout));
            }
            throw new ConnectionFailed($this->host, $this->port,
                ($this->tls ? 'TLS connect failed: ' : 'connect failed: ') . ($why !== '' ? $why : "errno $errno"));
        }
        stream_set_blocking($sock, true);
        $this->sock = $sock;
        $this->buf = '';
    }

    private function write(string $data): void
    {
        $deadline = microtime(true) + $this->ioTimeout;
        $off = 0;
        $len = strlen($data);
        while ($off < $len) {
            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                throw new Timeout($this->host, $this->port, sprintf('write timed out after %.2f s', $this->ioTimeout));
            }
            stream_set_timeout($this->sock, (int) $remaining, (int) (fmod($remaining, 1.0) * 1e6));
            $n = @fwrite($this->sock, $off === 0 ? $data : substr($data, $off));
            if ($n === false || $n === 0) {
                if (stream_get_meta_data($this->sock)['timed_out']) {
                    throw new Timeout($this->host, $this->port, sprintf('write timed out after %.2f s', $this->ioTimeout));
                }
                $err = error_get_last()['message'] ?? 'unknown error';
                throw new ConnectionFailed($this->host, $this->port, 'write failed: ' . $err);
            }
            $off += $n;
        }
    }

    /** The next reply line without its newline; null when the gateway closed the connection. */
    private function readLine(): ?string
    {
        $deadline = microtime(true) + $this->ioTimeout;
        while (($nl = strpos($this->buf, "\n")) === false) {
            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                throw new Timeout($this->host, $this->port, sprintf('no reply within %.2f s', $this->ioTimeout));
            }
            stream_set_timeout($this->sock, (int) $remaining, (int) (fmod($remaining, 1.0) * 1e6));
            // 64 KiB: many replies per system call, and what the gateway reads per receive too.
            $chunk = @fread($this->sock, 65536);
            if ($chunk === false || $chunk === '') {
                $meta = stream_get_meta_data($this->sock);
                if ($meta['timed_out']) {
                    throw new Timeout($this->host, $this->port, sprintf('no reply within %.2f s', $this->ioTimeout));
                }
                if ($meta['eof'] || $chunk === false) {
                    return null;
                }
                continue;
            }
            $this->buf .= $chunk;
        }
        $line = substr($this->buf, 0, $nl);
        $this->buf = (string) substr($this->buf, $nl + 1);
        return rtrim($line, "\r");
    }
}
