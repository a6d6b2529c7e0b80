<?php
// The client against a real gateway: acknowledgements, refusals, tokens, TLS, failures, retries.
declare(strict_types=1);

namespace PrintGateway\Tests\Client;

use PHPUnit\Framework\TestCase;
use PrintGateway\Ack;
use PrintGateway\Client;
use PrintGateway\EventId;
use PrintGateway\Exception\ConnectionFailed;
use PrintGateway\Exception\GatewayException;
use PrintGateway\Exception\Refused;
use PrintGateway\Exception\Timeout;
use PrintGateway\Refusal;
use PrintGateway\Tests\Support\GatewayProcess;
use PrintGateway\Tests\Support\Pki;

final class ClientTest extends TestCase
{
    private const TOKEN = 'a-token-of-at-least-16-chars';

    /** @var list<GatewayProcess> */
    private array $gateways = [];

    protected function tearDown(): void
    {
        foreach ($this->gateways as $gw) {
            if ($gw->running()) {
                $gw->stop();
            }
        }
    }

    private function gateway(array $overrides = []): GatewayProcess
    {
        return $this->gateways[] = new GatewayProcess($overrides);
    }

    private static function event(int $n): array
    {
        return ['event_type' => 'php_test', 'timestamp' => '2026-11-23T10:00:00Z', 'n' => $n];
    }

    /** @return array<string, list<array>> ledger events by event_id */
    private static function byEventId(array $events): array
    {
        $out = [];
        foreach ($events as $e) {
            $out[$e['event']['event_id'] ?? ''][] = $e;
        }
        return $out;
    }

    public function testEveryEventIsAcknowledgedInOrderWithItsEventId(): void
    {
        $gw = $this->gateway();
        $client = new Client(port: $gw->port, app: 'shop', window: 100);
        $hello = $client->connect();
        $this->assertTrue($hello['ok']);
        $this->assertTrue($hello['ack']);
        // 250 events: three windows, the last one partial.
        $result = $client->send(array_map(self::event(...), range(0, 249)));
        $this->assertTrue($result->ok());
        $this->assertCount(250, $result->acks());
        $seqs = array_map(static fn (Ack $a) => $a->seq, $result->replies);
        $this->assertSame(range(0, 249), array_keys($result->replies));
        $sorted = $seqs;
        sort($sorted);
        $this->assertSame($sorted, $seqs, 'seqs increase in batch order');
        $this->assertCount(250, array_unique($seqs));

        $ledger = [];
        foreach ($gw->events() as $e) {
            $ledger[$e['seq']] = $e;
        }
        foreach ($result->replies as $i => $ack) {
            $entry = $ledger[$ack->seq];
            $this->assertTrue(EventId::isValid($ack->eventId));
            $this->assertSame($result->eventIds[$i], $ack->eventId);
            $this->assertSame(self::event($i) + ['event_id' => $ack->eventId], $entry['event']);
            $this->assertSame('shop', $entry['source']['app']);
        }
    }

    public function testGeneratedEventIdsAreUuid4AndGivenOnesAreKept(): void
    {
        // 2000 ids: about 120 raw UUIDs of that many hold a digit run the gateway's card
        // redaction looks at; none of the ids given out may.
        $ids = array_map(static fn () => EventId::uuid4(), range(1, 2000));
        $this->assertCount(2000, array_unique($ids));
        foreach ($ids as $id) {
            $this->assertMatchesRegularExpression('/\A[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\z/', $id);
            $this->assertDoesNotMatchRegularExpression('/[0-9 -]{13}/', $id);
        }
        $gw = $this->gateway();
        $ack = (new Client(port: $gw->port))->sendOne(self::event(1) + ['event_id' => 'order-42/paid']);
        $this->assertSame('order-42/paid', $ack->eventId);
        $this->assertSame('order-42/paid', $gw->events()[0]['event']['event_id']);
    }

    public function testAnInvalidEventIdIsRefusedBeforeAnythingIsSent(): void
    {
        $gw = $this->gateway();
        $client = new Client(port: $gw->port);
        foreach (['', str_repeat('x', 129), "tab\there", 'é', 42] as $bad) {
            try {
                $client->send([self::event(0), self::event(1) + ['event_id' => $bad]]);
                $this->fail('accepted event_id ' . var_export($bad, true));
            } catch (\InvalidArgumentException $e) {
                $this->assertStringContainsString('event_id', $e->getMessage());
            }
        }
        $this->assertSame([], $gw->events());
    }

    public function testABadLineIsRefusedAtItsIndexAndTheOthersAreStored(): void
    {
        $gw = $this->gateway();
        $client = new Client(port: $gw->port, app: 'shop');
        $result = $client->sendLines([
            json_encode(self::event(0)) . "\n",
            "{\"event_type\": oops}\n",
            "\n",  // blank: no reply, no index
            "[1,2]\n",
            json_encode(self::event(3)),
        ]);
        $this->assertFalse($result->ok());
        $this->assertSame([0, 3], array_keys($result->acks()));
        $refusals = $result->refusals();
        $this->assertSame([1, 2], array_keys($refusals));
        $this->assertSame('bad_json', $refusals[1]->error);
        $this->assertSame('not_object', $refusals[2]->error);
        $this->assertFalse($refusals[1]->isTransient());
        try {
            $result->throwIfRefused();
            $this->fail('no Refused');
        } catch (Refused $e) {
            $this->assertSame(1, $e->index);
            $this->assertSame('bad_json', $e->error);
            $this->assertStringContainsString("127.0.0.1:{$gw->port}", $e->getMessage());
            $this->assertStringContainsString('event 1 refused: bad_json', $e->getMessage());
        }
        // The connection is still usable after refusals.
        $this->assertTrue($client->send([self::event(9)])->ok());
        $events = $gw->events();
        $this->assertCount(3, $events);
        // event_id was inserted into the raw lines without touching their other bytes.
        $this->assertSame(self::event(0) + ['event_id' => $result->eventIds[0]],
            ['event_type' => 'php_test', 'timestamp' => '2026-11-23T10:00:00Z', 'n' => 0] + $events[0]['event']);
        $this->assertSame($result->eventIds[0], $events[0]['event']['event_id']);
    }

    public function testSendOneThrowsRefusedWithCodeDetailAndIndex(): void
    {
        $gw = $this->gateway();
        $deep = 'x';
        for ($i = 0; $i < 40; $i++) {
            $deep = [$deep];
        }
        try {
            (new Client(port: $gw->port))->sendOne(self::event(0) + ['deep' => $deep]);
            $this->fail('no Refused');
        } catch (Refused $e) {
            $this->assertSame('too_deep', $e->error);
            $this->assertSame(0, $e->index);
            $this->assertNotSame('', $e->detail);
            $this->assertInstanceOf(Refusal::class, $e->partial->replies[0]);
        }
    }

    public function testTheRightTokenIsAcceptedAndAWrongOneRefused(): void
    {
        $gw = $this->gateway(['ingest' => ['tokens' => ['shop' => self::TOKEN]]]);
        $ack = (new Client(port: $gw->port, app: 'shop', token: self::TOKEN))->sendOne(self::event(0));
        $entry = $gw->events()[0];
        $this->assertSame($ack->seq, $entry['seq']);
        $this->assertTrue($entry['source']['auth']);

        foreach ([self::TOKEN . 'x', null] as $token) {
            $client = new Client(port: $gw->port, app: 'shop', token: $token);
            try {
                $client->send([self::event(1)]);
                $this->fail('wrong token accepted');
            } catch (Refused $e) {
                $this->assertSame('bad_token', $e->error);
                $this->assertNull($e->index, 'the hello was refused, not an event');
                $this->assertSame([0], $e->partial->unanswered());
                $this->assertStringContainsString("127.0.0.1:{$gw->port}: hello refused: bad_token", $e->getMessage());
                $this->assertFalse($e->isTransient());
            }
        }
        $this->assertCount(1, $gw->events());
    }

    public function testTlsWithThePinnedCaWorksAndAnotherCaOrNameFails(): void
    {
        $pki = Pki::dir();
        $gw = $this->gateway(['ingest' => ['tls' => ['cert' => "$pki/server.pem", 'key' => "$pki/server.key"]]]);
        $client = new Client(port: $gw->tlsPort, app: 'shop', tls: true, caFile: "$pki/ca.pem", window: 64);
        $result = $client->send(array_map(self::event(...), range(0, 199)));
        $this->assertTrue($result->ok());
        $this->assertCount(200, $gw->events());
        // A name in the certificate other than the address we dial.
        $named = new Client(port: $gw->tlsPort, tls: true, caFile: "$pki/ca.pem", peerName: 'gateway.test');
        $this->assertTrue($named->send([self::event(200)])->ok());

        foreach ([
            'another CA' => new Client(port: $gw->tlsPort, tls: true, caFile: "$pki/other-ca.pem"),
            'another name' => new Client(port: $gw->tlsPort, tls: true, caFile: "$pki/ca.pem", peerName: 'evil.test'),
            'the system CAs' => new Client(port: $gw->tlsPort, tls: true),
        ] as $what => $bad) {
            try {
                $bad->send([self::event(999)]);
                $this->fail("TLS accepted with $what");
            } catch (ConnectionFailed $e) {
                $this->assertStringContainsString("127.0.0.1:{$gw->tlsPort}: TLS connect failed", $e->getMessage(), $what);
            }
        }
        $this->assertCount(201, $gw->events());
    }

    public function testMutualTlsNamesTheAppByItsCertificate(): void
    {
        $pki = Pki::dir();
        $gw = $this->gateway(['ingest' => ['tls' => ['cert' => "$pki/server.pem", 'key' => "$pki/server.key",
            'client_ca' => "$pki/ca.pem"]]]);
        $client = new Client(port: $gw->tlsPort, app: 'shop', tls: true, caFile: "$pki/ca.pem",
            certFile: "$pki/client.pem", keyFile: "$pki/client.key");
        $ack = $client->sendOne(self::event(0));
        $entry = $gw->events()[0];
        $this->assertSame($ack->seq, $entry['seq']);
        $this->assertSame('shop', $entry['source']['app']);
        $this->assertTrue($entry['source']['auth']);
        // Without a client certificate the handshake fails.
        try {
            (new Client(port: $gw->tlsPort, app: 'shop', tls: true, caFile: "$pki/ca.pem"))->send([self::event(1)]);
            $this->fail('accepted without a client certificate');
        } catch (ConnectionFailed $e) {
            $this->assertStringContainsString("127.0.0.1:{$gw->tlsPort}", $e->getMessage());
        }
        $this->assertCount(1, $gw->events());
    }

    public function testALargeBatchGoesThroughInWindowsWithoutStalling(): void
    {
        $gw = $this->gateway();
        // 3000 events of about 2 KiB: 6 MB, twelve windows of 256 events (512 KiB each).
        $pad = str_repeat('p', 2000);
        $events = array_map(static fn ($n) => self::event($n) + ['pad' => $pad], range(0, 2999));
        $t0 = microtime(true);
        $result = (new Client(port: $gw->port, app: 'bulk'))->send($events);
        $elapsed = microtime(true) - $t0;
        $this->assertTrue($result->ok());
        $this->assertCount(3000, array_unique(array_map(static fn (Ack $a) => $a->seq, $result->replies)));
        $this->assertCount(3000, $gw->events());
        fwrite(STDERR, sprintf("\n3000 events of 2 KiB acknowledged in %.2f s\n", $elapsed));
    }

    public function testAConnectionTheGatewayClosedForIdlenessIsReplacedBeforeTheNextSend(): void
    {
        // idle_timeout_s 1: checked every 0.5 s, so the gateway closes within about 1.5 s.
        $gw = $this->gateway(['ingest' => ['idle_timeout_s' => 1]]);
        $client = new Client(port: $gw->port, app: 'shop');
        $first = $client->sendOne(self::event(0));
        $this->assertTrue($client->connected());
        $deadline = microtime(true) + 10.0;
        while ($client->connected()) {
            $this->assertLessThan($deadline, microtime(true), 'the gateway never closed the idle connection');
            usleep(20000);
        }
        $second = $client->sendOne(self::event(1));
        $this->assertGreaterThan($first->seq, $second->seq);
        $this->assertCount(2, $gw->events());
    }

    public function testAGatewayThatIsDownFailsFast(): void
    {
        $port = GatewayProcess::freePort();
        $client = new Client(port: $port);
        $t0 = microtime(true);
        try {
            $client->send([self::event(0)]);
            $this->fail('connected to nothing');
        } catch (ConnectionFailed $e) {
            $this->assertStringContainsString("127.0.0.1:$port: connect failed", $e->getMessage());
            $this->assertStringContainsString('refused', $e->getMessage());
            $this->assertTrue($e->isTransient());
            $this->assertSame([0], $e->partial->unanswered());
        }
        $this->assertLessThan(Client::DEFAULT_CONNECT_TIMEOUT, microtime(true) - $t0);
    }

    public function testAConnectThatHangsEndsAtTheConnectTimeout(): void
    {
        // A listener that never accepts, with its queue full: Linux drops further SYNs, so a
        // connect neither succeeds nor fails, like a gateway behind a dead link.
        $ctx = stream_context_create(['socket' => ['backlog' => 0]]);
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr, STREAM_SERVER_BIND | STREAM_SERVER_LISTEN, $ctx);
        $name = stream_socket_get_name($server, false);
        $port = (int) substr($name, strrpos($name, ':') + 1);
        $fillers = [];
        $timedOut = false;
        // Fill the queue (bounded: a few connections are enough for any backlog of 0).
        for ($i = 0; $i < 8 && !$timedOut; $i++) {
            $client = new Client(port: $port, connectTimeout: 0.3, ioTimeout: 0.2);
            $t0 = microtime(true);
            try {
                $client->connect();
                $this->fail('the fake listener answered a hello');
            } catch (Timeout $e) {
                $elapsed = microtime(true) - $t0;
                if (str_contains($e->getMessage(), 'connect timed out')) {
                    $timedOut = true;
                    $this->assertStringContainsString("127.0.0.1:$port: connect timed out", $e->getMessage());
                    $this->assertGreaterThanOrEqual(0.25, $elapsed);
                    $this->assertLessThan(0.3 + 0.25, $elapsed);
                } else {
                    // Connected into the queue; the hello got no reply within the I/O timeout.
                    $this->assertStringContainsString("127.0.0.1:$port: no reply within 0.20 s", $e->getMessage());
                    $fillers[] = $client;
                }
            }
        }
        $this->assertTrue($timedOut, 'the listen queue never filled');
        fclose($server);
    }

    public function testAGatewayKilledMidBatchLosesNothingWhenTheRestIsResent(): void
    {
        $gw = $this->gateway();
        $killed = false;
        $client = new Client(port: $gw->port, app: 'shop', window: 50,
            onProgress: static function (int $done) use ($gw, &$killed): void {
                if (!$killed) {
                    $killed = true;
                    $gw->kill();  // SIGKILL right after the first window was acknowledged
                }
            });
        $events = array_map(static fn ($n) => Client::withEventId(self::event($n)), range(0, 299));
        try {
            $client->send($events);
            $this->fail('the batch survived a killed gateway');
        } catch (GatewayException $e) {
            $this->assertInstanceOf(ConnectionFailed::class, $e);
            $this->assertStringContainsString("127.0.0.1:{$gw->port}", $e->getMessage());
            $partial = $e->partial;
        }
        $this->assertTrue($killed);
        $this->assertCount(50, $partial->acks());
        $this->assertSame(range(50, 299), $partial->unanswered());

        $gw->start();
        $retry = array_map(static fn ($i) => $events[$i], $partial->unanswered());
        $again = (new Client(port: $gw->port, app: 'shop'))->send($retry);
        $this->assertTrue($again->ok());

        $ledger = $gw->export();
        $byId = self::byEventId(array_filter($ledger, static fn ($e) => $e['kind'] === 'event'));
        $summary = implode(' ', array_map(static fn ($e) => $e['seq'] . ':' . ($e['event']['n'] ?? $e['name'] ?? $e['kind']), $ledger));
        foreach ($events as $i => $event) {
            $stored = $byId[$event['event_id']] ?? [];
            $this->assertNotEmpty($stored, "event $i lost; ledger: $summary\n" . $gw->logText());
            foreach ($stored as $entry) {
                $this->assertSame($event, $entry['event']);
            }
            if ($i < 50) {
                // Acknowledged before the kill and not resent: exactly once, at the acked seq.
                $this->assertCount(1, $stored);
                $this->assertSame($partial->replies[$i]->seq, $stored[0]['seq']);
            }
        }
    }

    public function testTheCommandLineSenderExitsLikeGatewaySendAck(): void
    {
        $gw = $this->gateway(['ingest' => ['tokens' => ['shop' => self::TOKEN]]]);
        $bin = dirname(__DIR__, 2) . '/bin/pgw-send';
        $run = static function (array $args, string $stdin, array $env = []) use ($bin): array {
            $p = proc_open([PHP_BINARY, $bin, ...$args], [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']],
                $pipes, null, $env + getenv());
            fwrite($pipes[0], $stdin);
            fclose($pipes[0]);
            $out = stream_get_contents($pipes[1]);
            $err = stream_get_contents($pipes[2]);
            fclose($pipes[1]);
            fclose($pipes[2]);
            return [proc_close($p), $out, $err];
        };
        $good = json_encode(self::event(0)) . "\n" . json_encode(self::event(1)) . "\n";
        $tokenFile = $gw->dir . '/token';
        file_put_contents($tokenFile, self::TOKEN . "\n");
        $port = (string) $gw->port;

        [$code, $out] = $run(['--port', $port, '--app', 'shop', '--token-file', $tokenFile], $good);
        $this->assertSame(0, $code, $out);
        $this->assertSame("sent 2, acknowledged 2, refused 0\n", $out);

        [$code, $out, $err] = $run(['--port', $port, '--app', 'shop'], $good . "nope\n", ['PGW_TOKEN' => self::TOKEN]);
        $this->assertSame(1, $code);
        $this->assertSame("sent 3, acknowledged 2, refused 1\n", $out);
        $this->assertStringContainsString('refused: event 2: bad_json', $err);

        [$code, , $err] = $run(['--port', $port, '--app', 'shop', '--token-file', $tokenFile . 'x'], $good);
        $this->assertSame(2, $code);
        [$code, , $err] = $run(['--port', $port, '--app', 'shop'], $good, ['PGW_TOKEN' => 'wrong-wrong-wrong-wrong']);
        $this->assertSame(2, $code);
        $this->assertStringContainsString('hello refused: bad_token', $err);
        [$code, , $err] = $run(['--port', (string) GatewayProcess::freePort()], $good);
        $this->assertSame(2, $code);
        $this->assertStringContainsString('connect failed', $err);
        [$code] = $run(['--port', 'x'], $good);
        $this->assertSame(2, $code);
        [$code] = $run(['stray'], $good);
        $this->assertSame(2, $code);
        $this->assertCount(4, $gw->events());
    }
}
