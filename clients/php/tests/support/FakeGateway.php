<?php
// A scripted stand-in for the gateway (a forked child on a loopback port) for replies today's
// gateway does not send yet: duplicate, flags, retry, event_id_conflict, garbage, early close.
declare(strict_types=1);

namespace PrintGateway\Tests\Support;

final class FakeGateway
{
    public readonly int $port;
    private int $pid;

    /**
     * @param \Closure(int, string): ?string $reply the reply line for the n-th event line (null:
     *     close the connection instead)
     */
    public function __construct(\Closure $reply)
    {
        $server = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $name = stream_socket_get_name($server, false);
        $this->port = (int) substr($name, strrpos($name, ':') + 1);
        $pid = pcntl_fork();
        if ($pid === -1) {
            throw new \RuntimeException('fork failed');
        }
        if ($pid === 0) {
            // The child: one connection, then exit without running the parent's shutdown code.
            // 10 s: far beyond the client connecting right after the fork; a test that never
            // connects does not leave the child waiting forever.
            $conn = @stream_socket_accept($server, 10.0);
            if ($conn !== false) {
                stream_set_timeout($conn, 10);
                fgets($conn);  // the hello
                fwrite($conn, '{"hello":{"ok":true,"version":"fake","head_seq":0,"conn":1,"ack":true,"max_line_bytes":65536}}' . "\n");
                for ($n = 0; ($line = fgets($conn)) !== false; $n++) {
                    $out = $reply($n, $line);
                    if ($out === null) {
                        break;
                    }
                    fwrite($conn, $out . "\n");
                }
                fclose($conn);
            }
            posix_kill(posix_getpid(), SIGKILL);
        }
        fclose($server);
        $this->pid = $pid;
    }

    public function __destruct()
    {
        posix_kill($this->pid, SIGKILL);
        pcntl_waitpid($this->pid, $status);
    }
}
