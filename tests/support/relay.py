"""A TCP relay on 127.0.0.1 in front of a local server (the tests' PostgreSQL), that can
turn into a port nobody answers: what an unreachable database host looks like to a
client, without traffic anywhere but the loopback.

Connections made through the relay keep working after :meth:`Relay.black_hole`; new ones
get no answer at all (the port's listen queue is full: the kernel drops their SYNs, so a
connect waits until its own timeout, as for a dropped route).
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either end closes."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class Relay:
    """Forwards each connection to ``127.0.0.1:target``; :attr:`port` is its own port."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # black-holed or closed
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            self._held += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def black_hole(self) -> None:
        """From now on a new connection gets no answer (the open ones go on)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        hole = socket.create_server(("127.0.0.1", self.port), backlog=0)
        self._held.append(hole)
        for _ in range(3):  # fill its queue (it never accepts)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self._held.append(filler)

    def close(self) -> None:
        """Close the listener and every connection through the relay."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._held:
            sock.close()
