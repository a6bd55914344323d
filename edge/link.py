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
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import serial

from edge import fragments as F
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


@dataclass
class PieceStats:
    pieces_sent: int = 0
    pieces_got: int = 0
    rebuilt: int = 0  # messages completed from pieces
    needs_sent: int = 0  # NEEDs we sent (our copy of a message was incomplete)
    needs_answered: int = 0  # NEEDs the peer sent that we answered with more pieces


class Link:
    """A framed byte link over a pyserial object: write frames, iterate received frames.

    Received FRAG pieces are reassembled into whole frames and NEEDs answered here, so users
    of ``read_frames`` see only whole messages. ``pieces=True`` (set once ``hello`` agreed on
    it) makes ``send`` cut messages into erasure-coded pieces sized by the measured error
    rate (edge/fragments.py, docs/protocol.md).
    """

    MAX_OUT = 16  # messages kept to answer NEEDs for
    MAX_IN = 8  # incomplete incoming messages held
    NEED_FOR = 2.0  # s after its last piece that an incomplete message is still asked for

    def __init__(self, ser, url: str = "", baud: int = 921_600, *, pace: bool = False):
        self.ser = ser
        self.url = url
        self.baud = baud
        self.pace = pace
        self.decoder = P.FrameDecoder()
        self.rx_bytes = 0
        self.rx_head = bytearray()  # the first bytes received: P.describe_noise
        self._line_free_at = 0.0  # when paced: time the emulated UART finishes sending
        self.pieces = False
        self.piece_cap = 0  # > 0: largest piece for the next message sent (the handshake)
        self.piece_stats = PieceStats()
        self.outgoing: OrderedDict[tuple[int, int], F.Outgoing] = OrderedDict()
        self.incoming: OrderedDict[tuple[int, int], F.Reassembly] = OrderedDict()
        self.done: OrderedDict[tuple[int, int], None] = OrderedDict()  # late pieces ignored

    def error_rate(self) -> float:
        """Estimated byte error rate of the line (both directions feed it)."""
        return self.decoder.stats.byte_error_rate

    def send(self, kind: P.Kind, seq: int, body: bytes = b"", *, copies: int = 1) -> None:
        """Send one message: a plain frame (``copies`` times), or (``pieces``) a batch of
        pieces; sending the same message again continues with fresh pieces, so every resend
        adds information."""
        if not self.pieces or kind not in (P.Kind.REQUEST, P.Kind.RESPONSE, P.Kind.EVENT):
            self.write(P.encode_frame(kind, seq, body) * max(1, copies))
            return
        key = (int(kind), seq)
        o = self.outgoing.get(key)
        err = self.error_rate()
        if o is None or o.body != body:
            size = F.piece_size(len(body), err)
            if self.piece_cap:
                size, self.piece_cap = min(size, self.piece_cap), 0
            o = self.outgoing[key] = F.Outgoing.new(int(kind), body, size)
            while len(self.outgoing) > self.MAX_OUT:
                self.outgoing.popitem(last=False)
        self._send_pieces(key, o, o.k, err)

    def _send_pieces(self, key, o: F.Outgoing, need: int, err: float) -> None:
        n = F.batch(need, F.piece_loss(o.data.shape[1], err))
        if o.k == 1 and n == 1:  # a clean line: the plain frame, as before pieces existed
            o.sent += 1
            self.write(P.encode_frame(P.Kind(o.kind), key[1], o.body))
            return
        self.write(b"".join(P.encode_frame(P.Kind.FRAG, key[1], b) for b in o.take(n)))
        self.piece_stats.pieces_sent += n

    def send_encoded(self, data: bytes) -> None:
        """Send an already encoded frame (the agent's response cache) as ``send`` would."""
        if not self.pieces:
            self.write(data)
            return
        fr = P.decode_raw(data.strip(P.DELIM))
        self.send(fr.kind, fr.seq, fr.body)

    def forget(self, kind: P.Kind, seq: int) -> None:
        """Stop collecting (and asking for) pieces of this message: its call is over."""
        key = (int(kind), seq)
        self.incoming.pop(key, None)
        self._done(key)

    def partial(self, kind: P.Kind, seq: int) -> bool:
        """Whether some pieces of this message have arrived, but not enough yet."""
        return (int(kind), seq) in self.incoming

    def _done(self, key) -> None:
        self.done[key] = None
        while len(self.done) > 256:
            self.done.popitem(last=False)

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
                yield from self.receive(data)
            else:
                self.ask_for_missing()
            if time.monotonic() >= deadline:
                return

    def receive(self, data: bytes) -> list[P.Frame]:
        """Whole frames completed by ``data``: pieces are collected and NEEDs answered."""
        out = []
        for fr in self.decoder.feed(data):
            if fr.kind == P.Kind.FRAG:
                whole = self._piece(fr)
                if whole is not None:
                    out.append(whole)
            elif fr.kind == P.Kind.NEED:
                self._need(fr)
            else:
                out.append(fr)
        return out

    def _piece(self, fr: P.Frame) -> P.Frame | None:
        try:
            kind, k, idx, length, data = F.parse_piece(fr.body)
            kind = P.Kind(kind)
        except ValueError:
            self.decoder.stats.bad += 1  # CRC-good but malformed: a peer bug, count it
            return None
        key = (int(kind), fr.seq)
        if key in self.done:
            return None
        self.piece_stats.pieces_got += 1
        now = time.monotonic()
        r = self.incoming.get(key)
        if r is None or (r.k, r.length, r.size) != (k, length, len(data)):
            r = self.incoming[key] = F.Reassembly(int(kind), k, length, len(data))
            while len(self.incoming) > self.MAX_IN:
                self.incoming.popitem(last=False)
        body = r.add(idx, data, now)
        if body is None:
            return None
        del self.incoming[key]
        self._done(key)
        self.piece_stats.rebuilt += 1
        return P.Frame(kind, fr.seq, body)

    def _need(self, fr: P.Frame) -> None:
        if len(fr.body) != F.NEED.size:
            return
        kind, have, k = F.NEED.unpack(fr.body)
        key = (kind, fr.seq)
        o = self.outgoing.get(key)
        if o is None:
            return
        if o.k == k:  # the receiver's count is a direct measure of this direction's losses
            lost = max(0, o.sent - have)
            new_sent, new_lost = o.sent - o.fb_sent, max(0, lost - o.fb_lost)
            if new_sent > 0:
                self.decoder.stats.note(new_sent * (o.data.shape[1] + F.PIECE_OVERHEAD),
                                        min(new_sent, new_lost))
            o.fb_sent, o.fb_lost = o.sent, max(o.fb_lost, lost)
            need = k - have
        else:  # "nothing arrived" (k = 0), after a timeout
            need = o.k
        self.piece_stats.needs_answered += 1
        self._send_pieces(key, o, max(1, need), self.error_rate())

    def ask_for_missing(self) -> None:
        """Send a NEED for each incomplete message whose pieces stopped arriving (called
        when a read found the line quiet)."""
        now = time.monotonic()
        for key, r in list(self.incoming.items()):
            quiet = 0.03 + 3 * (r.size + F.PIECE_OVERHEAD) * 10 / self.baud
            if now - r.last_piece > self.NEED_FOR:
                continue
            if now - max(r.last_piece, r.last_need) >= quiet:
                r.last_need = now
                self.request_more(P.Kind(key[0]), key[1])

    def request_more(self, kind: P.Kind, seq: int, *, count: bool = True) -> None:
        """NEED: ask the peer for more pieces of its message (kind, seq), saying how many
        we hold (none: k = 0). ``count=False``: a resend's companion, not a round."""
        r = self.incoming.get((int(kind), seq))
        have, k = (len(r.pieces), r.k) if r is not None else (0, 0)
        self.piece_stats.needs_sent += count
        self.write(P.encode_frame(P.Kind.NEED, seq, F.NEED.pack(int(kind), have, k)))

    def read_some(self) -> bytes:
        try:
            n = self.ser.in_waiting
            data = self.ser.read(max(1, min(n, 65536)))
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"read from {self.url} failed: {e}") from None
        self.rx_bytes += len(data)
        if len(self.rx_head) < 4096:
            self.rx_head += data[:4096 - len(self.rx_head)]
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
        self.last_retries = 0  # resends and NEED rounds of the latest call
        self.on_event = None  # callable(name, data) for EVENT frames

    def call(self, method: str, args: dict | None = None, *, timeout: float | None = None,
             retries: int | None = None, copies: int = 1):
        """Send one request and return the result, or raise RemoteError / NoAnswer.
        ``copies``: send a whole-frame request that many times per try (the handshake)."""
        self.seq = (self.seq + 1) % 2**32 or 1
        seq = self.seq
        body = P.encode_body({"m": method, "a": args or {}})
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        self.stats.calls += 1
        link, ps = self.link, self.link.piece_stats
        rounds0 = ps.needs_sent + ps.needs_answered
        # Only silences use up the retry budget: a NAK may be the device's answer to line
        # noise that reached it before our request (a host that died mid-frame, a port just
        # opened), so NAK-triggered resends are bounded by the call's time budget instead.
        give_up = time.monotonic() + timeout * (retries + 1)
        silences = tries = 0
        try:
            while True:
                link.send(P.Kind.REQUEST, seq, body, copies=copies)
                if tries and link.pieces:  # the answer may be what got lost: ask for it too
                    link.request_more(P.Kind.RESPONSE, seq, count=False)
                self.stats.sends += 1
                tries += 1
                outcome = self._await(seq, timeout)
                if isinstance(outcome, dict):
                    if outcome.get("ok"):
                        return outcome.get("r")
                    raise RemoteError(str(outcome.get("e", "error")),
                                      str(outcome.get("msg", "")))
                if outcome == "timeout":
                    self.stats.timeouts += 1
                    silences += 1
                    if silences > retries:
                        break
                elif time.monotonic() >= give_up:
                    break
                self.stats.retries += 1
        finally:
            link.forget(P.Kind.RESPONSE, seq)
            self.last_retries = tries - 1 + ps.needs_sent + ps.needs_answered - rounds0
        raise NoAnswer(f"no answer to {method!r} from {self.link.url} after "
                       f"{tries} tries")

    def _await(self, seq: int, timeout: float):
        """A decoded response map, or "nak" / "timeout". Pieces arriving or asked for
        (docs/protocol.md) are progress, not silence: they extend the wait."""
        link, ps = self.link, self.link.piece_stats
        now = time.monotonic()
        deadline, hard = now + timeout, now + max(timeout, self.slow_timeout)
        bad_before = link.decoder.stats.bad
        moving = ps.pieces_got + ps.needs_answered

        def nak_counts() -> bool:  # in pieces, a damaged frame is a missing piece: NEED
            return not link.pieces and not link.partial(P.Kind.RESPONSE, seq)

        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            nak = False  # read every frame that arrived: the answer may follow a NAK
            for fr in link.read_frames(min(left, 0.005)):
                if fr.kind == P.Kind.RESPONSE and fr.seq == seq:
                    try:
                        return fr.message()
                    except P.ProtocolError:
                        return "nak"  # CRC-good but undecodable: treat as damaged
                if fr.kind == P.Kind.NAK:
                    self.stats.naks += 1
                    nak = nak or nak_counts()
                elif fr.kind == P.Kind.ACK and fr.seq == seq:
                    deadline = max(deadline, time.monotonic() + self.slow_timeout)
                elif fr.kind == P.Kind.EVENT and self.on_event is not None:
                    try:
                        msg = fr.message()
                        self.on_event(msg.get("ev"), msg.get("d"))
                    except P.ProtocolError:
                        pass
            if ps.pieces_got + ps.needs_answered != moving:
                moving = ps.pieces_got + ps.needs_answered
                deadline = max(deadline, min(hard, time.monotonic() + timeout))
            if nak or (link.decoder.stats.bad > bad_before and nak_counts()):
                return "nak"  # the reply arrived damaged: ask again at once
