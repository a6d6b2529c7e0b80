<?php
// Exactly once through the gateway's event_id deduplication: resends, conflicts, a gateway
// killed mid-batch (phpunit -c clients/php/phpunit.xml --testsuite dedup; make test-php).
declare(strict_types=1);

namespace PrintGateway\Tests\Dedup;

use PHPUnit\Framework\TestCase;
use PrintGateway\Client;
use PrintGateway\Exception\GatewayException;
use PrintGateway\Tests\Support\GatewayProcess;

final class DedupTest extends TestCase
{
    private static function event(int $n): array
    {
        return ['event_type' => 'php_dedup', 'timestamp' => '2026-11-23T10:00:00Z', 'n' => $n];
    }

    public function testAResendGetsTheOriginalSeqMarkedDuplicate(): void
    {
        $gw = new GatewayProcess();
        $client = new Client(port: $gw->port, app: 'shop');
        $event = Client::withEventId(self::event(1));
        $first = $client->sendOne($event);
        $this->assertFalse($first->duplicate);
        $again = (new Client(port: $gw->port, app: 'shop'))->sendOne($event);
        $this->assertTrue($again->duplicate);
        $this->assertSame($first->seq, $again->seq);
        $this->assertCount(1, $gw->events());
        $gw->stop();
    }

    public function testADifferentEventUnderAKnownIdIsAPermanentConflict(): void
    {
        $gw = new GatewayProcess();
        $client = new Client(port: $gw->port, app: 'shop');
        $event = Client::withEventId(self::event(1));
        $client->sendOne($event);
        $result = $client->send([['n' => 2] + $event]);
        $refusal = $result->refusals()[0];
        $this->assertSame('event_id_conflict', $refusal->error);
        $this->assertFalse($refusal->isTransient());
        $gw->stop();
    }

    public function testAGatewayKilledMidBatchThenRetriedStoresEveryEventExactlyOnce(): void
    {
        $gw = new GatewayProcess();
        $killed = false;
        $client = new Client(port: $gw->port, app: 'shop', window: 50,
            onProgress: static function () use ($gw, &$killed): void {
                if (!$killed) {
                    $killed = true;
                    $gw->kill();
                }
            });
        $events = array_map(static fn ($n) => Client::withEventId(self::event($n)), range(0, 299));
        try {
            $client->send($events);
            $this->fail('the batch survived a killed gateway');
        } catch (GatewayException $e) {
            $partial = $e->partial;
        }
        $gw->start();
        // Resend the whole batch, as a sender that lost every acknowledgement would.
        $again = (new Client(port: $gw->port, app: 'shop'))->send($events);
        $this->assertTrue($again->ok());
        foreach ($partial->acks() as $i => $ack) {
            $this->assertTrue($again->replies[$i]->duplicate);
            $this->assertSame($ack->seq, $again->replies[$i]->seq);
        }
        $counts = array_count_values(array_map(static fn ($e) => $e['event']['event_id'], $gw->events()));
        foreach ($events as $i => $event) {
            $this->assertSame(1, $counts[$event['event_id']] ?? 0, "event $i");
        }
        $gw->stop();
    }
}
