<?php
// Reply forms from the protocol that today's gateway does not send yet, from a scripted fake:
// duplicates, flags, retry, event_id_conflict, a garbled reply, a refusal that closes the connection.
declare(strict_types=1);

namespace PrintGateway\Tests\Client;

use PHPUnit\Framework\TestCase;
use PrintGateway\Client;
use PrintGateway\Exception\ProtocolError;
use PrintGateway\Exception\Refused;
use PrintGateway\Tests\Support\FakeGateway;

final class RepliesTest extends TestCase
{
    private static function events(int $n): array
    {
        return array_map(static fn ($i) => ['event_type' => 'x', 'timestamp' => '2026-11-23T10:00:00Z', 'n' => $i], range(0, $n - 1));
    }

    public function testDuplicatesFlagsRetryAndConflictAreTold(): void
    {
        $replies = [
            '{"ok":true,"seq":7,"duplicate":true}',
            '{"ok":true,"seq":9,"flags":["missing_timestamp"]}',
            '{"ok":false,"error":"retry","detail":"index not ready"}',
            '{"ok":false,"error":"event_id_conflict","detail":"another event has this id"}',
        ];
        $fake = new FakeGateway(static fn (int $n) => $replies[$n]);
        $result = (new Client(port: $fake->port))->send(self::events(4));
        $this->assertFalse($result->ok());
        $this->assertTrue($result->replies[0]->duplicate);
        $this->assertSame(7, $result->replies[0]->seq);
        $this->assertFalse($result->replies[1]->duplicate);
        $this->assertSame(['missing_timestamp'], $result->replies[1]->flags);
        $this->assertSame('retry', $result->replies[2]->error);
        $this->assertTrue($result->replies[2]->isTransient());
        $this->assertSame('event_id_conflict', $result->replies[3]->error);
        $this->assertFalse($result->replies[3]->isTransient());
        $this->assertSame([], $result->unanswered());
    }

    public function testARefusalThatClosesTheConnectionLeavesTheRestUnanswered(): void
    {
        $fake = new FakeGateway(static fn (int $n) => match ($n) {
            0 => '{"ok":true,"seq":1}',
            1 => '{"ok":false,"error":"disk_full","detail":"free space below min_free_bytes"}',
            default => null,
        });
        try {
            (new Client(port: $fake->port))->send(self::events(5));
            $this->fail('no Refused');
        } catch (Refused $e) {
            $this->assertSame('disk_full', $e->error);
            $this->assertSame(1, $e->index);
            $this->assertTrue($e->isTransient());
            $this->assertCount(1, $e->partial->acks());
            $this->assertSame([2, 3, 4], $e->partial->unanswered());
        }
    }

    public function testAReplyThatIsNotAnAcknowledgementIsAProtocolError(): void
    {
        $fake = new FakeGateway(static fn (int $n) => $n === 0 ? '{"ok":true,"seq":1}' : 'HTTP/1.1 400 Bad Request');
        try {
            (new Client(port: $fake->port))->send(self::events(2));
            $this->fail('no ProtocolError');
        } catch (ProtocolError $e) {
            $this->assertStringContainsString("127.0.0.1:{$fake->port}: reply 1 is not an acknowledgement", $e->getMessage());
            $this->assertCount(1, $e->partial->acks());
        }
    }
}
