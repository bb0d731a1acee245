"""Loaded by every Python subprocess the tests start: refuse non-loopback connections.

Tests must never reach the network; this makes an accidental hub download fail fast and
loudly instead of silently passing on a machine that happens to be online.
"""

from __future__ import annotations

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: object) -> bool:
    if isinstance(address, str):  # AF_UNIX path
        return True
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return False


class NetworkBlocked(OSError):
    pass


def _connect(self: socket.socket, address: object) -> None:
    if not _allowed(address):
        raise NetworkBlocked(f"network access blocked in evalkit tests: {address!r}")
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    if not _allowed(address):
        raise NetworkBlocked(f"network access blocked in evalkit tests: {address!r}")
    return _real_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]


install()
