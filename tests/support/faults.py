"""Failures injected into real dependencies: a PostgreSQL write that fails half-way, a server that hangs."""

from __future__ import annotations

import socket

# Every UPDATE of the configuration row fails: a write has then stored its secret, not its row.
FAIL_ROW_UPDATES = """
CREATE FUNCTION fail_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure after the secret was written'; END $$;
CREATE TRIGGER fail_update BEFORE UPDATE ON spaces_config FOR EACH ROW EXECUTE FUNCTION fail_update();
"""


class HungServer:
    """A TCP port that accepts connections and never answers: a hung dependency."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)  # the kernel completes the handshakes; nothing ever reads
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()
