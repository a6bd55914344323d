"""Sockets for the stream: one small interface over UDP datagrams and TCP with RFC 4571
framing, so the sender and receiver do not care which protocol carries the packets."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from urllib.parse import urlsplit

from edge.errors import HushlinkError
from edge.transport.rtp import Deframer, frame_4571


class TransportError(HushlinkError):
    """A stream address that cannot be used (bad URL, port in use, unreachable peer)."""


def parse_url(url: str) -> tuple[str, str, int]:
    """'udp://HOST:PORT' or 'tcp://HOST:PORT' -> (protocol, host, port)."""
    u = urlsplit(url)
    if u.scheme not in ("udp", "tcp"):
        raise TransportError(f"{url!r}: use udp://HOST:PORT or tcp://HOST:PORT")
    try:
        port = u.port
    except ValueError:
        port = None
    if not u.hostname or not port:
        raise TransportError(f"{url!r}: needs a host and a port, e.g. udp://192.0.2.7:5004")
    return u.scheme, u.hostname, port


def parse_hostport(s: str) -> tuple[str, int]:
    """"ADDR:PORT" (":PORT" for all interfaces, port 0 for any free port) -> (addr, port)."""
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise TransportError(f"{s!r}: expected ADDR:PORT, e.g. 0.0.0.0:5004")
    return host.strip("[]") or "0.0.0.0", int(port)


def resolve(host: str) -> str:
    """The IPv4 address of ``host``; an unknown name is a TransportError at once (a sender
    retrying a name that will never resolve would only drop every packet)."""
    try:
        return socket.gethostbyname(host)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise TransportError(f"cannot resolve host {host!r}: {why}") from None


def bind_error(addr: tuple[str, int], proto: str, e: OSError) -> TransportError:
    if e.errno == errno.EADDRINUSE:
        return TransportError(f"{proto}://{addr[0]}:{addr[1]} is already in use; stop the other "
                              "program or choose another port")
    return TransportError(f"cannot listen on {proto}://{addr[0]}:{addr[1]}: {e.strerror}")


SO_TIMESTAMPNS = 35  # Linux (asm-generic and x86); Python's socket module lacks the name
_CMSG = socket.CMSG_SPACE(16)


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp each datagram's arrival (CLOCK_REALTIME, ns): arrival times
    then do not depend on when a busy CPU lets this process read the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def recv_stamped(sock: socket.socket, size: int = 65536) -> tuple[bytes, tuple, int]:
    """(data, source, arrival ns): the kernel's stamp when there is one, else time.time_ns()."""
    data, anc, _, src = sock.recvmsg(size, _CMSG)
    for level, kind, body in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(body) >= 16:
            sec, ns = struct.unpack_from("qq", body)
            return data, src, sec * 1_000_000_000 + ns
    return data, src, time.time_ns()


class UdpLink:
    """Connected-ish UDP socket: send to a fixed peer, receive the back channel on it."""

    proto = "udp"

    def __init__(self, host: str, port: int) -> None:
        self.peer = (resolve(host), port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)

    def send(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.peer)

    def recv(self) -> list[bytes]:
        """Back-channel packets (blocks up to 0.2 s); [] on timeout."""
        try:
            data, src = self.sock.recvfrom(65536)
        except (TimeoutError, BlockingIOError):
            return []
        except ConnectionRefusedError:  # ICMP from an earlier send: nobody listens yet
            return []
        return [data]

    def close(self) -> None:
        self.sock.close()


class TcpLink:
    """TCP client carrying RFC 4571 frames both ways."""

    proto = "tcp"

    def __init__(self, host: str, port: int, timeout: float = 1.0) -> None:
        self.peer = (host, port)
        try:
            self.sock = socket.create_connection(self.peer, timeout=timeout)
        except OSError as e:
            raise TransportError(f"cannot connect to tcp://{host}:{port}: "
                                 f"{e.strerror or e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(0.2)
        self._deframer = Deframer()

    def send(self, packet: bytes) -> None:
        self.sock.sendall(frame_4571(packet))

    def recv(self) -> list[bytes]:
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return []
        if not data:
            raise ConnectionResetError("peer closed the connection")
        return self._deframer.feed(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def open_link(proto: str, host: str, port: int):
    return UdpLink(host, port) if proto == "udp" else TcpLink(host, port)
