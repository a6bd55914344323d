"""Long messages on a noisy line: erasure-coded pieces, reassembly, and the sizing rules.

A message body of L bytes is cut into k pieces of s bytes (the last one zero-padded) and
extended with parity pieces of a systematic Cauchy Reed-Solomon code over GF(256): pieces
0..k-1 are the data itself, pieces k..255 are parity, and **any k distinct pieces rebuild
the body**. Each piece travels in its own CRC-checked frame, so a damaged frame is simply a
missing piece (an erasure). The sender sends a batch sized so that k pieces arrive with high
probability at the measured error rate; the receiver asks for more (NEED) only when they did
not. Why: at a byte error rate of 1 %, a 466-byte frame arrives intact 1 time in 100 and a
4 KiB one practically never, so resending whole frames cannot converge; small pieces plus a
little parity usually arrive in one round. Pure numpy, no I/O.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

MAX_PIECES = 256  # piece indices are one byte: k data + parity <= 256
MAX_K = 128  # data pieces per message, so that at least as many parity pieces exist
PIECE_OVERHEAD = 18  # wire bytes per piece besides its data (delimiters, COBS, headers, CRC)
HEAD = struct.Struct(">BBBH")  # inner kind, k, index, body length: the FRAG frame's body head
NEED = struct.Struct(">BBB")  # inner kind, pieces held, k: the NEED frame's body

# GF(256), polynomial x^8+x^4+x^3+x^2+1 (0x11d), generator 2
_EXP = np.zeros(512, np.uint8)
_LOG = np.zeros(256, np.int32)
_x = 1
for _i in range(255):
    _EXP[_i], _LOG[_x] = _x, _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
_EXP[255:510] = _EXP[:255]


def _mul(a, b) -> np.ndarray:
    """Element-wise GF(256) product (broadcasting)."""
    a, b = np.asarray(a, np.uint8), np.asarray(b, np.uint8)
    return np.where((a == 0) | (b == 0), 0, _EXP[_LOG[a] + _LOG[b]]).astype(np.uint8)


def _inv(a) -> np.ndarray:
    return _EXP[255 - _LOG[np.asarray(a, np.uint8)]]


def _cauchy(rows, cols) -> np.ndarray:
    """Coefficients 1/(x_j + y_i) with x = parity index, y = data index: every square
    sub-matrix of a Cauchy matrix is invertible, which makes the code MDS."""
    return _inv(np.bitwise_xor.outer(np.asarray(rows, np.uint8), np.asarray(cols, np.uint8)))


def split(body: bytes, k: int) -> np.ndarray:
    """(k, s) data pieces of ``body``, zero-padded."""
    s = max(1, -(-len(body) // k))
    buf = np.zeros(k * s, np.uint8)
    buf[:len(body)] = np.frombuffer(body, np.uint8)
    return buf.reshape(k, s)


def piece(data: np.ndarray, idx: int) -> bytes:
    """Piece ``idx`` (0..255) of the code whose data pieces are ``data`` (k, s)."""
    k = data.shape[0]
    if idx < k:
        return data[idx].tobytes()
    coef = _cauchy([idx], np.arange(k))[0]
    return np.bitwise_xor.reduce(_mul(coef[:, None], data), axis=0).tobytes()


def rebuild(k: int, length: int, pieces: dict[int, bytes]) -> bytes:
    """The body from any k distinct pieces (index -> bytes of equal size)."""
    if len(pieces) < k:
        raise ValueError(f"{len(pieces)} pieces, {k} needed")
    s = len(next(iter(pieces.values())))
    data = np.zeros((k, s), np.uint8)
    have = [i for i in range(k) if i in pieces]
    for i in have:
        data[i] = np.frombuffer(pieces[i], np.uint8)
    missing = [i for i in range(k) if i not in pieces]
    if missing:
        par = sorted(i for i in pieces if i >= k)[:len(missing)]
        rhs = np.stack([np.frombuffer(pieces[j], np.uint8) for j in par])
        if have:  # remove the known data pieces' share from each parity piece
            known = _cauchy(par, have)
            rhs ^= np.bitwise_xor.reduce(_mul(known[:, :, None], data[have][None]), axis=1)
        data[missing] = _solve(_cauchy(par, missing), rhs)
    return data.reshape(-1)[:length].tobytes()


def _solve(a: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """x with a @ x = rhs over GF(256); Gauss-Jordan, vectorised over rows."""
    e = a.shape[0]
    m = np.concatenate([a, rhs], axis=1).astype(np.uint8)
    for c in range(e):
        piv = c + int(np.flatnonzero(m[c:, c])[0])
        if piv != c:
            m[[c, piv]] = m[[piv, c]]
        m[c] = _mul(_inv(m[c, c]), m[c])
        f = m[:, c].copy()
        f[c] = 0
        m ^= _mul(f[:, None], m[c][None, :])
    return m[:, e:]


# ---------------------------------------------------------------- sizing

def piece_size(length: int, err: float, floor_err: float = 0.0) -> int:
    """Data bytes per piece that maximise goodput s/(s+o)·(1-e)^(s+o) at byte error rate
    ``err`` (o = PIECE_OVERHEAD); the whole body when the line is clean. At 1 %: 34 bytes."""
    e = max(err, floor_err)
    if e <= 0:
        s = length
    else:
        a = -math.log1p(-min(e, 0.5))
        o = PIECE_OVERHEAD
        s = int((-o + math.sqrt(o * o + 4 * o / a)) / 2)
    s = max(8, s, -(-length // MAX_K))
    return min(s, max(length, 1))


def piece_loss(size: int, err: float) -> float:
    """Probability that a piece of ``size`` data bytes is damaged at byte error rate err."""
    return 1.0 - (1.0 - min(max(err, 0.0), 0.5)) ** (size + PIECE_OVERHEAD)


def batch(need: int, loss: float, odds: float = 0.9) -> int:
    """Pieces to send so that ``need`` of them arrive with probability ``odds`` when each is
    lost with probability ``loss``: the exact binomial tail for small ``need``, its normal
    approximation above 32. A missed batch costs one NEED round, so 0.9 is plenty."""
    if need <= 0:
        return 0
    p = min(max(loss, 0.0), 0.9)
    q = 1.0 - p
    if need > 32:
        n0 = need / q
        return math.ceil((need + 1.3 * math.sqrt(n0 * p * q)) / q)
    n = need
    while n < MAX_PIECES:
        short = sum(math.comb(n, i) * q**i * p ** (n - i) for i in range(need))
        if 1.0 - short >= odds:
            return n
        n += 1
    return n


# ---------------------------------------------------------------- sender and receiver state

@dataclass
class Outgoing:
    """One message being sent in pieces; ``take(n)`` hands out fresh piece indices, wrapping
    round to the data pieces once all 256 are used."""

    kind: int
    body: bytes
    k: int
    data: np.ndarray
    next_idx: int = 0
    sent: int = 0
    fb_sent: int = 0  # pieces sent / lost as already counted from the receiver's NEEDs
    fb_lost: int = 0

    @classmethod
    def new(cls, kind: int, body: bytes, size: int) -> Outgoing:
        size = max(1, size, -(-len(body) // MAX_K))
        k = max(1, -(-len(body) // size))
        return cls(kind, body, k, split(body, k))

    def take(self, n: int) -> list[bytes]:
        """FRAG bodies of the next ``n`` pieces."""
        out = []
        for _ in range(n):
            idx = self.next_idx
            self.next_idx = (idx + 1) % MAX_PIECES
            out.append(HEAD.pack(self.kind, self.k, idx, len(self.body))
                       + piece(self.data, idx))
        self.sent += n
        return out


@dataclass
class Reassembly:
    """Pieces of one incoming message; ``body`` once k distinct pieces are held."""

    kind: int
    k: int
    length: int
    size: int
    pieces: dict[int, bytes] = field(default_factory=dict)
    last_piece: float = 0.0  # monotonic time of the newest piece
    last_need: float = 0.0  # when a NEED for it was last sent

    def add(self, idx: int, data: bytes, now: float) -> bytes | None:
        self.last_piece = now
        if len(data) == self.size:
            self.pieces.setdefault(idx, data)
        return rebuild(self.k, self.length, self.pieces) if len(self.pieces) >= self.k else None


def parse_piece(body: bytes) -> tuple[int, int, int, int, bytes]:
    """FRAG body -> (inner kind, k, index, length, piece data); ValueError if malformed."""
    if len(body) < HEAD.size:
        raise ValueError("short FRAG body")
    kind, k, idx, length = HEAD.unpack_from(body)
    data = body[HEAD.size:]
    if k == 0 or len(data) != max(1, -(-length // k)) or length > k * len(data):
        raise ValueError("inconsistent FRAG header")
    return kind, k, idx, length, data
