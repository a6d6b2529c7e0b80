"""One client's standing with the gateway: who it is, whether it may send, how it is answered.

The whole state machine of a session lives here (h11 keeps its state machine in
one module for the same reason): the identity of the peer, the app it claims
or proves (a hello token, a client certificate, an HTTP bearer token), whether
it may send events yet, and whether it asked for acknowledgements. Every
front-end (TCP, TLS, HTTP, syslog) keeps one Session per client and no other
copy of these facts. No sockets here.

States: `new` (nothing decided; a hello may come), `open` (events are taken),
`closed` (refused: nothing more is read).
"""

from __future__ import annotations

from typing import Any

from gateway.ingest.limits import Policy
from gateway.ingest.protocol import Hello
from gateway.ledger import entries

__all__ = ["Session"]

NEW = "new"
OPEN = "open"
CLOSED = "closed"


class Session:
    __slots__ = (
        "ack",
        "addr",
        "app",
        "authenticated",
        "cert_app",
        "conn_id",
        "port",
        "source",
        "source_map",
        "state",
    )

    def __init__(
        self, addr: str, port: int, conn_id: int, policy: Policy, cert_app: str | None = None
    ) -> None:
        self.addr = addr
        self.port = port
        self.conn_id = conn_id
        # The app named by a verified client certificate (mutual TLS), if any.
        self.cert_app = cert_app
        self.app: str | None = cert_app
        self.authenticated = cert_app is not None
        self.ack = False  # acknowledged mode (hello with "ack": true)
        # With require_token, nothing is taken before a hello whose token checks
        # (or a verified client certificate).
        self.state = OPEN if cert_app is not None or not policy.require_token else NEW
        self._set_source()

    def _set_source(self) -> None:
        self.source_map: dict[str, Any] = entries.source_map(
            self.addr, self.port, self.app, self.conn_id, self.authenticated
        )
        self.source = entries.encode_value(self.source_map)

    @property
    def authorized(self) -> bool:
        return self.state == OPEN

    @property
    def peer(self) -> str:
        return f"{self.addr}:{self.port}"

    def hello(self, hello: Hello, policy: Policy) -> str:
        """Apply a hello: '' when accepted, else the refusal code (the session closes)."""
        if self.cert_app is not None:
            # The certificate names the app: a hello may not claim another.
            refusal = "" if hello.app in (None, self.cert_app) else "bad_token"
            app = self.cert_app
        else:
            refusal = policy.authenticate(hello.app, hello.token)
            app = hello.app
        if refusal:
            self.state = CLOSED
            return refusal
        self.state = OPEN
        self.app = app
        self.ack = hello.ack
        self.authenticated = hello.token is not None or self.cert_app is not None
        self._set_source()
        return ""

    def bearer(self, app: str | None, token: str | None, policy: Policy) -> str:
        """An HTTP request's credentials (Authorization: Bearer): as a hello's token.

        Every request is acknowledged (the response is the acknowledgement).
        """
        if token is not None and app is None:
            app = policy.app_for_token(token)
            if app is None:
                self.state = CLOSED
                return "bad_token"
        return self.hello(Hello(app, True, token), policy)

    def close(self) -> None:
        self.state = CLOSED
