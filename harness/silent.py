"""A TCP endpoint that accepts connections and never answers (a hung or firewalled-after-
accept server): what client timeouts must be proven against, not only a refused port."""
from __future__ import annotations

import socket
import threading


class SilentServer:
    """Listens on 127.0.0.1, accepts every connection, reads nothing, says nothing."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-server")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.accepted:
            connection.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
