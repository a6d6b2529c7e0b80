"""Who may send, and how much: the allow list, per-app tokens, per-source limits.

Pure bookkeeping, no sockets: the server asks and acts (docs/protocol.md,
"Who may send").
"""

from __future__ import annotations

import hmac
import ipaddress
from collections import Counter

from gateway.config import IngestConfig, token_list

# Verdicts of the allow list remembered per peer address (a branch's apps
# connect from a handful of addresses, again and again); past this many the
# memo is cleared, so memory stays bounded whatever the number of peers.
ALLOWED_MEMO_SIZE = 1024


class Policy:
    def __init__(self, config: IngestConfig) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in config.allow]
        self.tokens = {
            app: tuple(s.encode() for s in token_list(secrets))
            for app, secrets in config.tokens.items()
        }
        self.require_token = config.require_token
        self.max_per_source = config.max_connections_per_source
        self.per_source: Counter[str] = Counter()  # open connections per address
        rate = config.rate_limit_eps
        burst = config.rate_burst or max(1, round(rate))
        self.buckets = TokenBuckets(rate, burst) if rate else None
        self._allowed: dict[str, bool] = {}

    def allowed(self, addr: str) -> bool:
        """Whether `addr` is in the allow list (parsed once per address)."""
        known = self._allowed.get(addr)
        if known is None:
            if len(self._allowed) >= ALLOWED_MEMO_SIZE:
                self._allowed.clear()
            known = self._allowed[addr] = self._check(addr)
        return known

    def _check(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
        return any(ip in net for net in self.networks)

    def over_connection_cap(self, addr: str) -> bool:
        return bool(self.max_per_source) and self.per_source[addr] >= self.max_per_source

    def authenticate(self, app: str | None, token: str | None) -> str:
        """'' when the hello may proceed; else the error code to refuse it with.

        An app with a configured token must present it, whatever require_token
        says; with require_token, every hello needs a configured app and its
        token. Comparison is constant-time.
        """
        secrets = self.tokens.get(app) if app is not None else None
        if secrets is None:
            if self.require_token or token is not None:
                return "bad_token"
            return ""
        if token is None:
            return "bad_token"
        presented = token.encode()
        # Every secret is compared (no early exit), so timing tells nothing.
        matches = [hmac.compare_digest(presented, secret) for secret in secrets]
        return "" if any(matches) else "bad_token"

    def app_for_token(self, token: str) -> str | None:
        """The app a bare token belongs to (HTTP bearer tokens), compared in constant time."""
        found = None
        presented = token.encode()
        for app, secrets in self.tokens.items():
            if any([hmac.compare_digest(presented, secret) for secret in secrets]):
                found = app
        return found


class TokenBuckets:
    """One token bucket per source address: `rate` events/s, holding at most `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.state: dict[str, tuple[float, float]] = {}  # addr -> (tokens, at)

    def take(self, addr: str, now: float) -> bool:
        tokens, at = self.state.get(addr, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self.state[addr] = (tokens, now)
            return False
        self.state[addr] = (tokens - 1.0, now)
        return True

    def forget_idle(self, now: float) -> None:
        """Drop full buckets (their sources are quiet), so the table stays small."""
        full = [a for a, (t, at) in self.state.items() if t + (now - at) * self.rate >= self.burst]
        for addr in full:
            del self.state[addr]
