"""A serial link behind a small interface: open any pyserial URL, send and receive frames,
and make requests with acknowledgements, timeouts and bounded retries.

``open_link("/dev/ttyACM0")``, ``open_link("socket://10.0.0.7:7000")``, ``open_link("loop://")``.
Used by the device agent (``edge.agent``) and by the host client (``host.link``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import serial

from edge import protocol as P
from edge.errors import HushlinkError


class LinkError(HushlinkError):
    """The serial link failed: port missing or busy, I/O error, no answer."""


class PortMissing(LinkError):
    pass


class PortBusy(LinkError):
    pass


class NoAnswer(LinkError):
    pass


class RemoteError(HushlinkError):
    """The device answered with an error code; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(f"device refused: {message} [{code}]")
        self.code = code
        self.remote_message = message


def open_link(url: str, baud: int = 921_600, *, timeout: float = 0.01,
              pace: bool = False, exclusive: bool = True) -> Link:
    """Open a serial port or pyserial URL; clear errors for a missing or busy port.

    ``pace=True`` sleeps so that writes leave at the baud's line rate (10 bits per byte):
    a pty ignores the baud, so benchmarks pace to emulate a real UART.
    """
    kwargs = {"baudrate": baud, "timeout": timeout, "write_timeout": 2.0}
    is_device = "://" not in url
    if is_device:
        kwargs["exclusive"] = exclusive
        if not os.path.exists(url):
            raise PortMissing(f"serial port {url} does not exist (is the device plugged in "
                              "and the cable a data cable?)")
    try:
        ser = serial.serial_for_url(url, **kwargs)
    except serial.SerialException as e:
        text = str(e)
        if (getattr(e, "errno", None) in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK)
                or "exclusively lock" in text or "busy" in text.lower()):
            raise PortBusy(f"serial port {url} is busy: another program has it open "
                           "(close it, or check `fuser " + url + "`)") from None
        if getattr(e, "errno", None) == errno.ENOENT or "No such file" in text:
            raise PortMissing(f"serial port {url} does not exist") from None
        if getattr(e, "errno", None) == errno.EACCES:
            raise LinkError(f"no permission to open {url} (add yourself to the dialout "
                            "group)") from None
        raise LinkError(f"cannot open {url}: {text}") from None
    except (ValueError, OSError) as e:
        raise LinkError(f"cannot open {url}: {e}") from None
    return Link(ser, url, baud, pace=pace)


class Link:
    """A framed byte link over a pyserial object: write frames, iterate received frames."""

    def __init__(self, ser, url: str = "", baud: int = 921_600, *, pace: bool = False):
        self.ser = ser
        self.url = url
        self.baud = baud
        self.pace = pace
        self.decoder = P.FrameDecoder()
        self.rx_bytes = 0
        self._line_free_at = 0.0  # when paced: time the emulated UART finishes sending

    def write(self, data: bytes) -> None:
        try:
            if self.pace:
                self._paced_write(data)
            else:
                self.ser.write(data)
        except serial.SerialTimeoutException:
            raise LinkError(f"write to {self.url} timed out (nobody reading)") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"write to {self.url} failed: {e}") from None

    def _paced_write(self, data: bytes) -> None:
        byte_s = 10.0 / self.baud  # 8N1: start + 8 data + stop bits
        step = max(64, self.baud // 1000)  # about 10 ms of line time per piece
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            now = time.monotonic()
            start = max(now, self._line_free_at)
            self._line_free_at = start + len(piece) * byte_s
            self.ser.write(piece)
            delay = self._line_free_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def read_frames(self, timeout: float) -> Iterator[P.Frame]:
        """Yield the good frames that arrive within ``timeout`` seconds (maybe none)."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.read_some()
            if data:
                yield from self.decoder.feed(data)
            if time.monotonic() >= deadline:
                return

    def read_some(self) -> bytes:
        try:
            n = self.ser.in_waiting
            data = self.ser.read(max(1, min(n, 65536)))
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"read from {self.url} failed: {e}") from None
        self.rx_bytes += len(data)
        return data

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a vanished port may itself fail
            self.ser.close()


@dataclass
class CallStats:
    calls: int = 0
    sends: int = 0  # frames written (first tries + retries)
    retries: int = 0
    naks: int = 0
    timeouts: int = 0


class Requester:
    """Request/response over a Link: each call has a seq; a lost or damaged request or reply
    is resent with the same seq (the device answers retries from its cache, so a request is
    executed once). A NAK (the device saw a damaged frame) triggers an immediate resend, a
    silence of ``timeout`` s a resend after waiting; after ``retries`` silences, or NAKs
    for (retries + 1) x timeout s: NoAnswer.
    An ACK means the device heard the request and is working: the wait extends to
    ``slow_timeout``."""

    def __init__(self, link: Link, *, timeout: float = 0.5, retries: int = 5,
                 slow_timeout: float = 30.0, seed: int | None = None):
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.slow_timeout = slow_timeout
        self.seq = random.Random(seed).randrange(1, 2**32)  # unique per host session
        self.stats = CallStats()
        self.on_event = None  # callable(name, data) for EVENT frames

    def call(self, method: str, args: dict | None = None, *, timeout: float | None = None,
             retries: int | None = None):
        """Send one request and return the result, or raise RemoteError / NoAnswer."""
        self.seq = (self.seq + 1) % 2**32 or 1
        seq = self.seq
        frame = P.request(seq, method, args)
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        self.stats.calls += 1
        # Only silences use up the retry budget: a NAK may be the device's answer to line
        # noise that reached it before our request (a host that died mid-frame, a port just
        # opened), so NAK-triggered resends are bounded by the call's time budget instead.
        give_up = time.monotonic() + timeout * (retries + 1)
        silences = tries = 0
        while True:
            self.link.write(frame)
            self.stats.sends += 1
            tries += 1
            outcome = self._await(seq, timeout)
            if isinstance(outcome, dict):
                if outcome.get("ok"):
                    return outcome.get("r")
                raise RemoteError(str(outcome.get("e", "error")), str(outcome.get("msg", "")))
            if outcome == "timeout":
                self.stats.timeouts += 1
                silences += 1
                if silences > retries:
                    break
            elif time.monotonic() >= give_up:
                break
            self.stats.retries += 1
        raise NoAnswer(f"no answer to {method!r} from {self.link.url} after "
                       f"{tries} tries")

    def _await(self, seq: int, timeout: float):
        """A decoded response map, or "nak" / "timeout"."""
        deadline = time.monotonic() + timeout
        bad_before = self.link.decoder.stats.bad
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for fr in self.link.read_frames(min(left, 0.005)):
                if fr.kind == P.Kind.RESPONSE and fr.seq == seq:
                    try:
                        return fr.message()
                    except P.ProtocolError:
                        return "nak"  # CRC-good but undecodable: treat as damaged
                if fr.kind == P.Kind.NAK:
                    self.stats.naks += 1
                    return "nak"
                if fr.kind == P.Kind.ACK and fr.seq == seq:
                    deadline = max(deadline, time.monotonic() + self.slow_timeout)
                elif fr.kind == P.Kind.EVENT and self.on_event is not None:
                    try:
                        msg = fr.message()
                        self.on_event(msg.get("ev"), msg.get("d"))
                    except P.ProtocolError:
                        pass
            if self.link.decoder.stats.bad > bad_before:
                return "nak"  # the reply arrived damaged: ask again at once
