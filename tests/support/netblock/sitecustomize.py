"""Loaded by Python at start-up when this folder is on PYTHONPATH: refuse and record
every network connection that is not to the loopback interface or a Unix socket."""

import os
import socket

_LOG = os.environ.get("MIATARI_NETBLOCK_LOG", "")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _allowed(address: object) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # Unix socket
    host = str(address[0]) if isinstance(address, tuple) and address else ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _record(address: object) -> None:
    if _LOG:
        with open(_LOG, "a") as fh:
            fh.write(f"{address!r}\n")


def _connect(self, address):
    if not _allowed(address):
        _record(address)
        raise OSError(101, f"network blocked in this test: {address!r}")
    return _real_connect(self, address)


def _connect_ex(self, address):
    if not _allowed(address):
        _record(address)
        return 101
    return _real_connect_ex(self, address)


# Replacing the methods on the class is the point: every socket of the process is held to the allow-list.
socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
