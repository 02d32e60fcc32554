"""A TCP relay between standard input/output and a host loopback port.

QEMU's ``guestfwd=...-cmd:COMMAND`` runs COMMAND for each connection the guest opens and wires the
connection to its stdin/stdout; a chardev target would instead connect once, at QEMU's start, and serve a
single guest connection. ``python3 -m rehost.targets.relay PORT`` is that per-connection command.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def relay(port: int, host: str = "127.0.0.1") -> None:
    sock = socket.create_connection((host, port))
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def upstream() -> None:
        try:
            while chunk := os.read(stdin, 1 << 20):
                sock.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    try:
        while n := sock.recv_into(buf):
            data = view[:n]
            while data:
                written = os.write(stdout, data)
                data = data[written:]
    except OSError:
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    relay(int(sys.argv[1]))
