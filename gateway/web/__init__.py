"""The web console: accounts, the sans-I/O application, and its listener on the loop.

`accounts` keeps the console's users (scrypt hashes in the state directory);
`app` answers requests without sockets (sessions, throttling, CSRF, pages);
`server` serves it with h11 on the gateway's own event loop.
"""
