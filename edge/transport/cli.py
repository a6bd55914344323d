"""``edge-denoise send`` and ``edge-denoise receive``. Heavy imports happen inside the commands
so ``edge-denoise --help`` stays fast."""

from __future__ import annotations

import json
import signal
import threading
import time

import click

from edge.cliutil import Number, param_type
from edge.errors import HushlinkError
from edge.params import PROTOCOLS


def _params(bitrate, buffer, share, fec, loss_hint, protocol):
    from edge.params import TransportParams

    return TransportParams(bitrate_kbps=bitrate, protocol=protocol, buffer_ms=buffer,
                           share=share, fec=fec, loss_hint_pct=loss_hint)


def _telemetry(path):
    from edge.transport.telemetry import TelemetryLog

    return TelemetryLog(path) if path else TelemetryLog()


def _print(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for k, v in summary.items():
            click.echo(f"{k:14s} {v}")


_common = [
    click.option("--bitrate", default=64, show_default=True, type=param_type("bitrate_kbps"),
                 help="Stream bitrate on the wire, kbit/s (50-200); Opus gets it minus the "
                      "RTP headers."),
    click.option("--buffer", default=200, show_default=True, type=param_type("buffer_ms"),
                 help="Receiver jitter buffer bound, ms (100-500)."),
    click.option("--share", default=1.0, show_default=True, type=param_type("share"),
                 help="Share of the link capacity allocated to this stream, (0, 1]."),
    click.option("--fec/--no-fec", default=True, show_default=True,
                 help="Opus in-band forward error correction."),
    click.option("--loss-hint", default=5, show_default=True, type=param_type("loss_hint_pct"),
                 help="Opus expected packet loss, %% (raised to the measured loss)."),
    click.option("--telemetry", "telemetry_path", type=click.Path(dir_okay=False),
                 help="Append the per-second link telemetry here (JSON lines)."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


RATE_CHOICES = click.Choice(["8000", "12000", "16000", "24000", "48000"])


def _format(f):
    """--rate/--channels/--srtp-key: the audio format Opus carries, and SRTP."""
    f = click.option("--srtp-key", "srtp_key_path", type=click.Path(dir_okay=False),
                     help="Encrypt and authenticate with SRTP/SRTCP (AES_CM_128_HMAC_SHA1_80) "
                          "using the 30-byte master key in this file (raw, base64 or hex; "
                          "make one with: head -c 30 /dev/urandom > FILE).")(f)
    f = click.option("--channels", type=click.IntRange(1, 2), default=None,
                     help="Audio channels, 1 or 2 (Opus stereo). "
                          "[default: 1; receive: the SDP's]")(f)
    return click.option("--rate", type=RATE_CHOICES, default=None,
                        help="Audio sample rate, Hz (Opus: 8000-48000). "
                             "[default: 16000; receive: the SDP's]")(f)


def _srtp_key(path):
    if not path:
        return None
    from edge.transport.srtp import load_key

    return load_key(path)


def _load_clip(path, rate: int, channels: int):
    """The file at ``rate`` with ``channels``: mono is duplicated into stereo, more than two
    channels keep the first two."""
    import numpy as np

    from edge.audio import load_audio, read_channels, resample

    if channels == 1:
        clip = load_audio(path, rate=rate)
        return clip.samples, clip.seconds
    data, sr, _ = read_channels(path)
    x = data[:, :2] if data.shape[1] >= 2 else np.repeat(data[:, :1], 2, axis=1)
    x = resample(np.ascontiguousarray(x), sr, rate)
    return x, len(x) / rate


def _local_address(host: str) -> str:
    """The address this machine sends to ``host`` from (the SDP's o= line)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


@click.command("send")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--to", "urls", required=True, multiple=True, metavar="URL",
              help="udp://HOST:PORT or tcp://HOST:PORT; repeat (udp) to send the same stream "
                   "to more receivers (telemetry comes back from the first).")
@click.option("--capacity", type=Number(float, lo=0.0, lo_open=True), default=None,
              help="Link capacity, kbit/s; the stream gets min(bitrate, share x capacity).")
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Probe the link's capacity with short packet trains (UDP; about 2.7 %% of "
                   "the capacity), reported by the receiver as capacity_kbps.")
@click.option("--loop", is_flag=True, help="Repeat the file until stopped (SIGTERM, Ctrl-C).")
@click.option("--params-file", type=click.Path(dir_okay=False),
              help="Follow the active parameters in this file (the agent's params.json, "
                   "serve's {params_file}): applied between two packets, logged.")
@click.option("--sdp", "sdp_path", type=click.Path(dir_okay=False),
              help="Write the stream's SDP here before sending (for `receive --sdp`, "
                   "GStreamer's sdpdemux, ffplay, VLC).")
@_format
@common
def send_cmd(path, urls, capacity, probe, loop, params_file, sdp_path, rate, channels,
             srtp_key_path, bitrate, buffer, share, fec, loss_hint, telemetry_path,
             as_json) -> None:
    """Stream an audio file over RTP/Opus (UDP or TCP), paced in real time."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edge.cliutil import err_console
    from edge.outpaths import check_output
    from edge.paramfollow import ParamsFile, describe_change
    from edge.transport.links import parse_url, resolve
    from edge.transport.sdp import StreamDescription, save_sdp
    from edge.transport.sender import Sender, send_file

    url = urls[0]
    proto, host, port = parse_url(url)
    for u in urls:
        p, h, _ = parse_url(u)
        if u is not url and p != "udp":
            raise click.UsageError(f"{u}: more destinations must be udp://HOST:PORT")
        resolve(h)  # an unknown host fails now, not as 24 silent retries and exit 0
    addr = resolve(host)
    check_output(telemetry_path, "telemetry log")
    check_output(sdp_path, "SDP")
    rate, channels = int(rate or 16_000), channels or 1
    key = _srtp_key(srtp_key_path)
    params = _params(bitrate, buffer, share, fec, loss_hint, proto)
    follow = ParamsFile(params_file) if params_file else None
    if follow is not None:
        params = follow.poll() or params
    samples, seconds = _load_clip(path, rate, channels)
    log = _telemetry(telemetry_path)
    sender = Sender(url, params, telemetry=log, capacity_kbps=capacity, also=urls[1:],
                    rate=rate, channels=channels, srtp_key=key, probe=probe)
    if sdp_path:  # the first destination's
        save_sdp(sdp_path, StreamDescription(
            address=addr, port=port, pt=sender.pt, rate=rate, channels=channels,
            fec=params.fec, protocol=proto, srtp=key is not None, ssrc=sender.ssrc,
            cname=sender.cname, origin=_local_address(addr)))
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())

    def on_frame(k, t_ns):
        if stop.is_set():
            raise _Stopped
        new = follow.poll() if follow is not None and k % 10 == 0 else None
        if new is not None and new != sender.params:
            err_console.print(f"send: parameters: {describe_change(sender.params, new)}",
                              highlight=False)
            sender.update(new)

    sent, start = 0.0, None
    try:
        bar = (nullcontext() if loop else
               Progress(TextColumn("sending"), BarColumn(), TimeRemainingColumn(),
                        console=err_console, transient=True))
        with bar as prog:  # no progress bar when looping (no end to show)
            task = prog.add_task("send", total=seconds) if prog is not None else None
            while not stop.is_set():
                # a repeat continues the capture times: the media clock runs on seamlessly
                start = send_file(samples, sender, on_frame=on_frame, start_ns=start,
                                  progress=(lambda k, n: prog.update(task, completed=k * 0.02))
                                  if prog is not None else None)
                sent += seconds
                if not loop:
                    break
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        sender.close(bye=not stop.is_set())  # SIGTERM: the agent stops or restarts the stream
        log.close()
    last = log.window(5)
    _print({"sent_s": round(sent, 3), **sender.stats(),
            "telemetry_records": len(log),
            "last_loss_pct": round(last[-1].loss_pct, 2) if last else None}, as_json)


class _Stopped(Exception):
    """SIGTERM while sending: finish with a BYE."""


@click.command("receive")
@click.option("--listen", metavar="ADDR:PORT",
              help="Where to listen (default with --sdp: the SDP's address and port).")
@click.option("--sdp", "sdp_path", type=click.Path(dir_okay=False),
              help="Take the stream's address, port, protocol, payload type, rate, channels "
                   "and SRTP from this SDP (written by `send --sdp`, or any RFC 7587 one).")
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default=None,
              help="udp or tcp. [default: udp, or the SDP's]")
@click.option("--play", is_flag=True, help="Play on the default output device.")
@click.option("--record", type=click.Path(dir_okay=False), help="Write the received audio.")
@click.option("--duration", type=Number(float, lo=0.0, lo_open=True), default=None,
              help="Stop after this many seconds (default: when the sender says BYE).")
@click.option("--peer", metavar="ADDR:PORT", default=None,
              help="Take the stream only from this address (port 0: any port); default: "
                   "the first source that sends a valid stream.")
@click.option("--tap", type=click.Path(dir_okay=False),
              help="Append the played audio here as it plays (raw float32 at the stream's "
                   "rate, channels interleaved), for `host-calibrate apply --tap` to score.")
@click.option("--playout", type=click.Choice(["adaptive", "ptp"]), default="adaptive",
              show_default=True,
              help="adaptive: jitter buffer anchored on arrivals; ptp: play each sample at its "
                   "capture time + --link-offset on this host's PTP clock (AES67), so "
                   "receivers play in step; --record then starts on a whole PTP second.")
@click.option("--link-offset", type=Number(float, lo=0.0, lo_open=True, hi=5000.0),
              default=None, metavar="MS",
              help="PTP playout: capture-to-playout time, ms (default 100); more than the "
                   "worst path delay + 40 ms, the same on every receiver.")
@click.option("--realtime-priority", type=Number(int, lo=0, hi=99), default=0,
              show_default=True, metavar="N",
              help="Run the receiver at SCHED_FIFO priority N (needs CAP_SYS_NICE; 0: normal "
                   "scheduling).")
@_format
@common
def receive_cmd(listen, sdp_path, protocol, play, record, duration, peer, tap, playout,
                link_offset, realtime_priority, rate, channels, srtp_key_path, bitrate, buffer,
                share, fec, loss_hint, telemetry_path, as_json) -> None:
    """Receive an RTP/Opus stream (jitter buffer, or PTP-timed playout)."""
    from pathlib import Path

    from edge.audio import save_audio
    from edge.cliutil import err_console
    from edge.transport.receiver import Receiver, set_realtime

    if play and record:
        raise click.UsageError("use --play or --record, not both")
    if link_offset is not None and playout != "ptp":
        raise click.UsageError("--link-offset needs --playout ptp")
    if play and playout == "ptp":
        raise click.UsageError("--playout ptp writes --record or --tap; a sound card would "
                               "have to be locked to PTP itself (not supported yet)")
    if not listen and not sdp_path:
        raise click.UsageError("give --listen ADDR:PORT or --sdp FILE")
    from edge.outpaths import check_output

    if record and not Path(record).parent.exists():
        raise HushlinkError(f"{Path(record).parent}: output directory does not exist")
    check_output(record, "recording")
    check_output(telemetry_path, "telemetry log")
    key = _srtp_key(srtp_key_path)
    pt = rtcp_port = None
    if sdp_path:
        listen, protocol, rate, channels, pt, key, rtcp_port = _from_sdp(
            sdp_path, listen, protocol, rate, channels, key)
    protocol, rate, channels = protocol or "udp", int(rate or 16_000), channels or 1
    params = _params(bitrate, buffer, share, fec, loss_hint, protocol)
    player = _Player(rate, channels) if play else None
    log = _telemetry(telemetry_path)
    tap_fh = _open_tap(tap) if tap else None
    outs = [f for f in (player.write if player else None,
                        (lambda y: tap_fh.write(y.astype("<f4").tobytes())) if tap_fh else None)
            if f is not None]
    if realtime_priority:  # this thread too: it takes the GIL 20 times a second
        set_realtime(realtime_priority)
    extra = {"pt": pt, "rtcp_port": rtcp_port} if pt is not None else {}
    rx = Receiver(listen, params, on_audio=(lambda y: [f(y) for f in outs]) if outs else None,
                  keep_audio=bool(record), telemetry=log, peer=peer, playout=playout,
                  link_offset_ms=100.0 if link_offset is None else link_offset,
                  realtime_priority=realtime_priority, rate=rate, channels=channels,
                  srtp_key=key, **extra)
    err_console.print(f"listening on {protocol}://{rx.addr[0]}:{rx.port}")
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    t_end = time.monotonic() + duration if duration else None
    try:
        while not stop.is_set() and not rx.done.is_set():
            if t_end is not None and time.monotonic() >= t_end:
                break
            stop.wait(0.05)
    finally:
        signal.signal(signal.SIGTERM, old)
        rx.close()
        log.close()
        if player:
            player.close()
        if tap_fh:
            tap_fh.close()
    summary = rx.summary()
    if player:
        summary["play_underruns"] = player.underruns
    if record:
        audio = rx.audio()
        if not len(audio):
            raise HushlinkError(f"no audio was received on {listen}; {record} not written")
        save_audio(record, audio, rate=rate)
        summary["record"] = record
    _print(summary, as_json)


def _from_sdp(path, listen, protocol, rate, channels, key):
    """The receive options an SDP sets; an explicit option wins, a contradiction is an error."""
    import ipaddress

    from edge.transport.sdp import load_sdp

    d = load_sdp(path)
    if d.srtp and key is None and d.srtp_key is None:
        raise HushlinkError(f"{path}: the stream is encrypted (RTP/SAVP); give its key with "
                            "--srtp-key FILE")
    if key is not None and not d.srtp:
        raise HushlinkError(f"{path}: the stream is not encrypted (RTP/AVP) but --srtp-key "
                            "was given")
    if protocol and protocol != d.protocol:
        raise HushlinkError(f"{path}: the SDP says {d.protocol}, --protocol says {protocol}")
    if not listen:
        host = d.address
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.is_multicast:
            raise HushlinkError(f"{path}: multicast ({host}) is not supported; "
                                "give --listen ADDR:PORT for a unicast copy")
        # the SDP names this machine's address; listen there when it is local, else on all
        listen = f"{host if _is_local(host) else '0.0.0.0'}:{d.port}"
    # RTCP on its own port unless muxed: a=rtcp's, else the RTP port + 1 (RFC 3550 §11)
    rtcp_port = None if d.rtcp_mux or d.protocol == "tcp" else (d.rtcp_port or d.port + 1)
    return (listen, d.protocol, rate or d.rate, channels or d.channels, d.pt,
            key if key is not None else d.srtp_key, rtcp_port)


def _is_local(host: str) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def _open_tap(path):
    try:
        return open(path, "wb", buffering=0)  # noqa: SIM115  (unbuffered: read while it grows)
    except OSError as e:
        raise HushlinkError(f"{path}: cannot write the audio tap ({e.strerror})") from None


class _Player:
    """Default output device at ``rate`` with ``channels``; the PortAudio callback only pops
    queued frames."""

    PRIME = 2  # frames (40 ms) queued before output starts

    def __init__(self, rate: int = 16_000, channels: int = 1) -> None:
        import collections

        import numpy as np
        import sounddevice as sd

        self._q = collections.deque(maxlen=50)
        self.underruns = 0
        self._np = np

        self._primed = False

        def cb(out, frames, t, status):
            # start (and restart after an underrun) only with PRIME frames queued, so the
            # jitter of the playout thread's wake-ups never reaches the sound card
            if not self._primed and len(self._q) < self.PRIME:
                out[:] = 0.0
                return
            self._primed = True
            need, got = frames, []
            while need > 0 and self._q:
                f = self._q.popleft()
                got.append(f[:need])
                if len(f) > need:
                    self._q.appendleft(f[need:])
                need -= len(got[-1])
            y = (np.concatenate(got) if got else np.zeros(0, np.float32)).reshape(-1, channels)
            if len(y) < frames:
                self.underruns += 1
                self._primed = False
                y = np.pad(y, ((0, frames - len(y)), (0, 0)))
            out[:] = y

        try:
            self._s = sd.OutputStream(samplerate=rate, channels=channels, dtype="float32",
                                      blocksize=rate // 50, callback=cb)
            self._s.start()
        except Exception as e:  # PortAudio errors have no common base class
            raise HushlinkError(f"cannot open the output device: {e}") from None

    def write(self, frame) -> None:
        self._q.append(frame)

    def close(self) -> None:
        self._s.stop()
        self._s.close()
