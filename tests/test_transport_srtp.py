"""SRTP/SRTCP through pylibsrtp: a stream with the right key plays and reports as without
encryption, its payload never appears on the wire in clear, a wrong key decodes nothing and
says so in a count, and key files in the forms people have are read (or refused clearly)."""

from __future__ import annotations

import base64
import socket
import time

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.params import TransportParams
from edge.transport import rtp, srtp
from edge.transport.receiver import Receiver
from edge.transport.sender import Sender, send_file


def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("form", ["raw", "base64", "hex", "hex-newline"])
def test_key_file_forms(tmp_path, form):
    key = bytes(range(1, 31))
    data = {"raw": key, "base64": base64.b64encode(key), "hex": key.hex().encode(),
            "hex-newline": key.hex().encode() + b"\n"}[form]
    (tmp_path / "k").write_bytes(data)
    assert srtp.load_key(tmp_path / "k") == key


def test_bad_key_files_are_clear_errors(tmp_path):
    (tmp_path / "short").write_bytes(b"0123456789")
    with pytest.raises(srtp.SrtpError, match="expected 30 bytes.*head -c 30 /dev/urandom"):
        srtp.load_key(tmp_path / "short")
    with pytest.raises(srtp.SrtpError, match="cannot read"):
        srtp.load_key(tmp_path / "missing")
    r = CliRunner().invoke(cli, ["receive", "--listen", "127.0.0.1:0", "--srtp-key",
                                 str(tmp_path / "short"), "--duration", "1"])
    assert r.exit_code == 1 and "Error:" in r.output and "30 bytes" in r.output


def test_protected_packets_round_trip_and_hide_the_payload():
    key = srtp.new_key()
    a, b = srtp.SrtpSession(key), srtp.SrtpSession(key)
    payload = b"opus-frame-" * 8
    clear = rtp.RtpPacket(seq=1, timestamp=960, ssrc=5, payload=payload, send_ns=7).pack()
    wire = a.protect(clear)
    assert len(wire) == len(clear) + srtp.TAG_BYTES and payload not in wire
    assert wire[:12] == clear[:12]  # the RTP header stays readable (RFC 3711)
    assert b.unprotect(wire) == clear
    with pytest.raises(srtp.SrtpError, match="replay"):
        b.unprotect(wire)
    tampered = bytearray(a.protect(rtp.RtpPacket(seq=2, timestamp=1920, ssrc=5,
                                                 payload=payload).pack()))
    tampered[-15] ^= 1
    with pytest.raises(srtp.SrtpError, match="authentication"):
        b.unprotect(bytes(tampered))


class _Tap:
    """A UDP relay that keeps a copy of every datagram it forwards to the receiver."""

    def __init__(self, dest_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.dest = ("127.0.0.1", dest_port)
        self.seen: list[bytes] = []
        import threading

        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        src = None
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if addr == self.dest:  # the receiver's reports, back to the sender
                if src is not None:
                    self.sock.sendto(data, src)
                continue
            src = addr
            self.seen.append(data)
            self.sock.sendto(data, self.dest)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def test_encrypted_stream_plays_reports_and_hides_its_telemetry():
    key = srtp.new_key()
    rx = Receiver("127.0.0.1:0", TransportParams(), srtp_key=key)
    tap = _Tap(rx.port)
    tx = Sender(f"udp://127.0.0.1:{tap.port}", TransportParams(), srtp_key=key)
    try:
        send_file(_tone(2.5), tx)
        deadline = time.monotonic() + 10
        while tx.rtcp == 0:  # an SRTCP report came back and authenticated
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        tx.close()
        rx.wait(5)
        rx.close()
        tap.close()
    s = rx.summary()
    assert s["received"] == 125 and s["lost"] == 0 and s["srtp_errors"] == 0 and s["bye"] == 1
    assert tx.srtp_errors == 0 and tx.rtt_ms is not None
    # capacity probes travel in clear, so an SRTP sender sends none (the receiver would count
    # each as a key error above)
    assert tx.probe is False and tx.probe_packets == 0
    y = rx.audio()[4000:]
    assert abs(np.argmax(np.abs(np.fft.rfft(y))) * 16_000 / len(y) - 440) < 5
    # on the wire: no JSON telemetry or parameters in clear, every RTP packet carries a tag
    assert not any(b'"bitrate_kbps"' in d or b"HLPR" in d for d in tap.seen)


def test_a_wrong_key_decodes_nothing_and_counts_every_packet():
    rx = Receiver("127.0.0.1:0", TransportParams(), srtp_key=srtp.new_key())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams(), srtp_key=srtp.new_key())
    try:
        send_file(_tone(1.0), tx)
        tx.close()
        time.sleep(0.5)
    finally:
        tx.close()
        rx.close()
    s = rx.summary()
    assert s["received"] == 0 and len(rx.audio()) == 0 and s["bye"] == 0
    # 50 media packets, and every SRTCP report and BYE: all refused, none parsed as anything
    assert s["srtp_errors"] >= 50 and s["malformed"] == 0 and s["rtcp"] == 0


def test_clear_packets_to_an_srtp_receiver_are_refused():
    """An unencrypted sender cannot inject into an encrypted stream's receiver."""
    rx = Receiver("127.0.0.1:0", TransportParams(), srtp_key=srtp.new_key())
    tx = Sender(f"udp://127.0.0.1:{rx.port}", TransportParams())
    try:
        send_file(_tone(0.5), tx)
        time.sleep(0.3)
    finally:
        tx.close()
        rx.close()
    assert rx.summary()["received"] == 0 and rx.summary()["srtp_errors"] >= 25


def test_a_duplicated_srtp_packet_is_a_replay_not_a_key_error():
    """A link that duplicates packets must not read as a wrong key."""
    key = srtp.new_key()
    rx = Receiver("127.0.0.1:0", TransportParams(), srtp_key=key, keep_audio=False)
    tx = srtp.SrtpSession(key)
    try:
        w1, w2, w3 = (tx.protect(rtp.RtpPacket(seq=n, timestamp=960 * n, ssrc=9,
                                               payload=b"\xf8\xff\xfe").pack())
                      for n in (1, 2, 3))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for wire in (w1, w2, w2, w3):
                s.sendto(wire, ("127.0.0.1", rx.port))
            deadline = time.monotonic() + 5
            while ((rx.summary()["srtp_replayed"], rx.summary()["received"]) < (1, 3)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
    finally:
        rx.close()
    s = rx.summary()
    assert (s["srtp_replayed"], s["srtp_errors"], s["received"]) == (1, 0, 3)
