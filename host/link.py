"""Host client for the serial control link: typed calls and clear errors.

    with connect("/dev/ttyACM0", baud=921600) as dev:
        print(dev.info["device_id"])
        dev.set_params(buffer_ms=150); dev.apply(timeout_s=20); dev.confirm()
        dev.upload("bundle.tar", "bundle.tar", progress=lambda done, total: ...)

Errors (all ``HushlinkError``, so the CLIs print one line): ``PortMissing``, ``PortBusy``,
``NoAnswer`` (wrong baud rate or not a hushlink device), ``VersionMismatch``,
``RemoteError`` (the device refused: ``.code`` says why).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from pathlib import Path

from edge import protocol as P
from edge.errors import HushlinkError
from edge.link import (  # noqa: F401  (re-exported for users of the client)
    LinkError,
    NoAnswer,
    PortBusy,
    PortMissing,
    RemoteError,
    Requester,
    open_link,
)
from edge.params import Telemetry, TransportParams

HANDSHAKE_PIECE = 32  # bytes per piece of the hello reply (docs/protocol.md)
HELLO_COPIES = 3  # the hello request goes 3 times per try: at 5 % byte errors one copy of
#                   its 43 bytes arrives about 1 time in 9; a device answers copies from its cache


class VersionMismatch(HushlinkError):
    pass


class DeviceClient:
    """A connected device: ``hello`` done, ``info`` holds its identity and versions."""

    def __init__(self, url: str, baud: int = 921_600, *, timeout: float = 0.5,
                 retries: int = 5, pace: bool = False):
        self.url, self.baud = url, baud
        self.link = open_link(url, baud, pace=pace)
        self.rpc = Requester(self.link, timeout=timeout, retries=retries)
        try:
            self.info = self._hello()
        except BaseException:
            self.link.close()
            raise

    def _hello(self) -> dict:
        try:
            # small pieces for the ~470-byte reply: on a noisy line a whole one rarely arrives
            info = self.rpc.call("hello", {"version": P.PROTOCOL_VERSION,
                                           "pieces": HANDSHAKE_PIECE}, copies=HELLO_COPIES)
        except NoAnswer:
            link = self.link
            hint = (P.describe_noise(bytes(link.rx_head), link.decoder.stats, link.rx_bytes)
                    if link.rx_bytes else "nothing came back: wrong baud rate, not a hushlink "
                    "device, or `edge-denoise serve` not running on it")
            raise NoAnswer(f"no answer from {self.url} at {self.baud} baud ({hint})") from None
        except RemoteError as e:
            if e.code == "version":
                raise VersionMismatch(f"protocol version mismatch: {e.remote_message}; update "
                                      "hushlink on the host or the device") from None
            raise
        self.link.pieces = bool(info.get("pieces"))  # an older device answers in whole frames
        return info

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.link.close()

    def call(self, method: str, args: dict | None = None, **kw):
        """Any message, including ones registered by extensions (``flash.*``)."""
        return self.rpc.call(method, args, **kw)

    # -- typed helpers
    def get_info(self) -> dict:
        return self.call("get_info")

    def get_params(self) -> dict:
        return self.call("get_params")

    def set_params(self, params: TransportParams | dict | None = None, **kw) -> dict:
        d = params.to_dict() if isinstance(params, TransportParams) else dict(params or {})
        return self.call("set_params", {"params": {**d, **kw}})

    def apply(self, timeout_s: float = 30.0) -> dict:
        return self.call("apply", {"timeout_s": float(timeout_s)})

    def confirm(self) -> dict:
        return self.call("confirm")

    def revert(self) -> dict:
        return self.call("revert")

    def start_stream(self) -> dict:
        return self.call("start_stream")

    def stop_stream(self) -> dict:
        return self.call("stop_stream")

    def telemetry(self, window: float = 60.0, since: float = 0.0) -> list[Telemetry]:
        """All records within ``window`` s newer than ``since`` (pages through replies)."""
        out: list[Telemetry] = []
        while True:
            r = self.call("get_telemetry", {"window": float(window), "since": float(since)})
            recs = [Telemetry.from_dict(dict(zip(r["fields"], row, strict=True)))
                    for row in r["rows"]]
            out += recs
            if not r["more"] or not recs:
                return out
            since = recs[-1].t

    def events(self, limit: int = 32) -> list[dict]:
        """The device's newest fault events (``live --fix-faults``), oldest first."""
        return list(self.call("get_events", {"limit": int(limit)})["events"])

    def upload(self, path: str | Path, remote_name: str | None = None, *,
               progress: Callable[[int, int], None] | None = None,
               chunk_size: int = P.CHUNK_SIZE) -> dict:
        """Send a file into the device's staging directory; resumes from the bytes the
        device already holds. Returns put_end's result (name, size, sha256)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise HushlinkError(f"cannot read {path}: {e.strerror}") from None
        name = remote_name or path.name
        sha = hashlib.sha256(data).hexdigest()
        have = self.call("put_begin", {"name": name, "size": len(data), "sha256": sha})["have"]
        chunk_size = max(1, min(chunk_size, P.CHUNK_SIZE))
        if progress:
            progress(have, len(data))
        while have < len(data):
            piece = data[have:have + chunk_size]
            have = self.call("put_chunk", {"name": name, "offset": have, "data": piece,
                                           "crc32": zlib.crc32(piece)})["have"]
            if progress:
                progress(have, len(data))
        return self.call("put_end", {"name": name})


def connect(url: str, baud: int = 921_600, **kw) -> DeviceClient:
    """Open ``url`` and shake hands; raises PortMissing, PortBusy, NoAnswer, VersionMismatch."""
    return DeviceClient(url, baud, **kw)
