"""The worker's local control socket: `<data_dir>/<name>/control.sock`, one JSON line each
way (a `ControlRequest`, then a `ControlReply`). It needs neither the broker nor Redis, so
`pool-worker list` works while both are down. The socket is the owner's only (0600).

Unix socket paths are limited to 107 bytes; a longer one is reached through
`/proc/self/fd/<dir fd>/control.sock`, which names the same file."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from broker_topology.control import ControlOp, ControlReply, ControlRequest, decode
from broker_topology.errors import ConfigError, MessageError, SealpoolError

from .storage import MAX_SOCKET_PATH

if TYPE_CHECKING:
    from .control import Controller

log = logging.getLogger(__name__)

#: A request is a few hundred bytes; anything longer is not one.
MAX_REQUEST_BYTES = 64 * 1024


class WorkerNotRunning(SealpoolError):
    """No worker answers on that socket."""


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    if len(str(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        reply = self.server.controller.handle_bytes(line.strip())
        self.wfile.write(reply.to_bytes() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, address: str, controller: Controller) -> None:
        self.controller = controller
        super().__init__(address, _Handler)


class ControlServer:
    """Serves the socket on a thread while the `with` block runs; removes it afterwards."""

    def __init__(self, path: Path, controller: Controller) -> None:
        self.path = path
        self.controller = controller
        self._server: _Server | None = None

    def __enter__(self) -> ControlServer:
        if self.path.exists() or self.path.is_symlink():
            try:
                request(self.path, ControlRequest(op=ControlOp.INFO), timeout=2)
            except WorkerNotRunning:
                self.path.unlink()  # left by a worker that died
            else:
                raise ConfigError(f"another pool-worker is running here (control socket "
                                  f"{self.path}); give this one another --name")
        old = os.umask(0o077)
        try:
            with _address(self.path) as address:
                self._server = _Server(address, self.controller)
        finally:
            os.umask(old)
        threading.Thread(target=self._server.serve_forever, name="control-socket",
                         daemon=True).start()
        log.info("control socket %s", self.path)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def request(path: Path, req: ControlRequest, timeout: float = 10.0) -> ControlReply:
    """Send one request to the worker behind `path` and return its reply."""
    if not path.exists():
        raise WorkerNotRunning(f"no pool-worker is running here (no control socket {path})")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _address(path) as address:
                sock.connect(address)
            sock.sendall(req.to_bytes() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionRefusedError, FileNotFoundError):
            raise WorkerNotRunning(f"no pool-worker is running here (stale control socket "
                                   f"{path})") from None
        except TimeoutError:
            raise WorkerNotRunning(f"the pool-worker behind {path} did not answer within "
                                   f"{timeout:.0f}s") from None
    try:
        reply: ControlReply = decode(ControlReply, data)
    except MessageError as exc:
        raise WorkerNotRunning(f"unreadable answer on {path}: {exc}") from None
    return reply
