"""The larger training corpus and the cross-corpus evaluation split, built from pinned public
repositories (training/corpus/sources.toml) into a git-ignored cache.

Why a builder and not a folder: the audio's licences forbid copying it into this repository,
so the repository keeps only what makes the build reproducible: the sources (repository,
commit, path patterns, licence) and a manifest of every file it produced (source blob sha256,
duration, speaker, category, role). A rebuild from the same mirrors must give the same
manifest; ``--check`` verifies that without writing.

Each source repository is read from a local mirror (``git clone --mirror`` of it, or the
project's fetch tool's copy) at the pinned commit, with ``git cat-file --batch``; nothing is
downloaded here. Every file is decoded, downmixed, resampled to 16 kHz with soxr (VHQ), has
its DC removed, is trimmed of leading/trailing silence where the source asks for it, passes
the quality gate (no clipping, a bandwidth floor for speech) and is written as 16-bit FLAC.

Layout of the cache (``--out``, default build/corpus)::

    train/speech/<source>/<speaker>/<file>.flac     train/noise/<source>/<category>/...
    eval/speech/<source>/<speaker>/<file>.flac      eval/noise/<source>/<category>/...
    manifest.csv   (the same rows as training/corpus/manifest.csv)
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge.errors import HushlinkError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (Jetson JetPack 6): tomli is the same parser
    import tomli as tomllib

RATE = 16_000
HERE = Path(__file__).resolve().parent / "corpus"
SOURCES = HERE / "sources.toml"
MANIFEST = HERE / "manifest.csv"
COLUMNS = ("file", "role", "kind", "source", "speaker", "category", "seconds", "repo",
           "commit", "path", "sha256", "licence", "commercial")


class CorpusError(HushlinkError):
    """A corpus that cannot be built (missing mirror, wrong commit, bad sources file)."""


@dataclass(frozen=True)
class Source:
    name: str
    repo: str  # owner/name on GitHub
    commit: str
    kind: str  # "speech" or "noise"
    include: tuple[str, ...]
    licence: str
    commercial: bool
    role: str = "train"  # speech: "train" or "eval"; noise: decided per category
    exclude: tuple[str, ...] = ()
    speaker: int | None = None  # path component naming the speaker
    speaker_prefix: str = ""
    category: int | None = None  # path component naming the noise category
    eval_categories: tuple[str, ...] = ()
    eval_share: float = 0.0
    trim_silence: bool = False
    bandwidth_gate_db: float | None = None


def load_sources(path: Path = SOURCES) -> list[Source]:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CorpusError(f"{path}: cannot read the corpus sources ({e})") from None
    out = []
    for i, s in enumerate(raw.get("source", [])):
        try:
            src = Source(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
        except TypeError as e:
            raise CorpusError(f"{path}: source {i + 1}: {e}") from None
        if src.kind not in ("speech", "noise") or src.role not in ("train", "eval"):
            raise CorpusError(f"{path}: source {src.name}: kind must be speech|noise and "
                              "role train|eval")
        out.append(src)
    return out


# ------------------------------------------------------------------------------- git access
def find_mirror(mirrors: Path, repo: str) -> Path:
    """The git directory of ``repo`` under ``mirrors``: OWNER+NAME[/repo][/.git] or NAME.git."""
    owner, name = repo.split("/", 1)
    for cand in (mirrors / f"{owner}+{name}" / "repo", mirrors / f"{owner}+{name}",
                 mirrors / f"{name}.git", mirrors / name):
        for d in (cand, cand / ".git"):
            if (d / "objects").is_dir() and (d / "HEAD").is_file():
                return d
    raise CorpusError(f"no mirror of {repo} under {mirrors}: run `git clone --mirror "
                      f"https://github.com/{repo} {mirrors}/{owner}+{name}` first")


def _git(gitdir: Path, *args: str) -> bytes:
    r = subprocess.run(["git", f"--git-dir={gitdir}", *args], capture_output=True)
    if r.returncode != 0:
        raise CorpusError(f"git {' '.join(args[:2])} in {gitdir}: "
                          f"{r.stderr.decode(errors='replace').strip()[:200]}")
    return r.stdout


def list_blobs(gitdir: Path, commit: str) -> list[tuple[str, str, int]]:
    """(path, blob id, size) of every file at ``commit``; size -1 for an absent blob."""
    out = []
    for line in _git(gitdir, "ls-tree", "-r", "-l", "-z", commit).split(b"\0"):
        if not line:
            continue
        meta, path = line.split(b"\t", 1)
        _mode, typ, oid, size = meta.split()
        if typ == b"blob":  # size "BAD": a blob the mirror does not hold
            out.append((path.decode(), oid.decode(), int(size) if size.isdigit() else -1))
    return out


def read_blobs(gitdir: Path, oids: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """Stream blobs through one ``git cat-file --batch``; None for a blob the mirror lacks
    (fetch leaves out large blobs)."""
    p = subprocess.Popen(["git", f"--git-dir={gitdir}", "cat-file", "--batch"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for oid in oids:
            p.stdin.write(oid.encode() + b"\n")
            p.stdin.flush()
            head = p.stdout.readline().split()
            if len(head) < 3 or head[1] == b"missing":
                yield oid, None
                continue
            data = p.stdout.read(int(head[2]))
            p.stdout.read(1)  # the newline after the contents
            yield oid, data
    finally:
        p.stdin.close()
        p.wait()


def select(blobs: list[tuple[str, str, int]], src: Source) -> list[tuple[str, str, int]]:
    keep = []
    for path, oid, size in blobs:
        if not any(fnmatch.fnmatchcase(path, g) for g in src.include):
            continue
        if any(fnmatch.fnmatchcase(Path(path).name, g) or fnmatch.fnmatchcase(path, g)
               for g in src.exclude):
            continue
        keep.append((path, oid, size))
    return sorted(keep)


# ------------------------------------------------------------------------- audio processing
def band_ratio_db(x: np.ndarray) -> float:
    """4.5-7.5 kHz energy relative to 0.3-3.5 kHz (dB), over the louder half of 32 ms frames:
    below about -25 dB the file is band-limited (an MP3 or telephone origin)."""
    n = 512
    frames = x[: len(x) // n * n].reshape(-1, n)
    if len(frames) < 2:
        return 0.0
    spec = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
    energy = spec.sum(1)
    loud = spec[energy >= np.median(energy)]
    f = np.fft.rfftfreq(n, 1 / RATE)
    hi = loud[:, (f >= 4500) & (f <= 7500)].sum()
    lo = loud[:, (f >= 300) & (f <= 3500)].sum()
    return float(10 * np.log10((hi + 1e-12) / (lo + 1e-12)))


def trim_silence(x: np.ndarray, floor_db: float = -40.0, margin_s: float = 0.15) -> np.ndarray:
    """Cut leading and trailing 10 ms frames more than ``floor_db`` below the loudest frame,
    keeping ``margin_s`` of context on each side."""
    hop = RATE // 100
    e = np.array([np.mean(np.square(x[i:i + hop])) for i in range(0, len(x) - hop + 1, hop)])
    if not len(e):
        return x
    db = 10 * np.log10(e + 1e-12)
    on = np.flatnonzero(db > db.max() + floor_db)
    m = int(margin_s * RATE)
    return x[max(0, on[0] * hop - m): min(len(x), (on[-1] + 1) * hop + m)]


def convert(data: bytes, src: Source) -> tuple[np.ndarray | None, str]:
    """Bytes of an audio file -> (16 kHz mono float32, "") or (None, why it was dropped)."""
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types on undecodable input
        return None, f"undecodable ({str(e).splitlines()[0][:60] if str(e) else type(e)})"
    if np.max(np.abs(x)) >= 0.999:
        return None, "clipped"
    x = x.mean(axis=1)
    if sr != RATE:
        x = soxr.resample(x, sr, RATE, quality="VHQ").astype(np.float32)
    x = x - np.mean(x)
    if src.trim_silence:
        x = trim_silence(x)
    if len(x) < RATE // 2:
        return None, "shorter than 0.5 s"
    if np.sqrt(np.mean(np.square(x))) < 1e-4:
        return None, "silent"
    if src.bandwidth_gate_db is not None and band_ratio_db(x) < src.bandwidth_gate_db:
        return None, "band-limited"
    peak = float(np.max(np.abs(x)))
    if peak > 0.999:
        x = x * (0.999 / peak)
    return x.astype(np.float32), ""


def noise_role(src: Source, category: str, path: str) -> str:
    """Whole held-out categories, then a deterministic share of each other category's
    recordings (by a hash of the path, so adding a file moves no other file)."""
    if category in src.eval_categories:
        return "eval"
    h = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if h < src.eval_share else "train"


# ----------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    rows: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # blobs the mirror does not hold (over the fetch size limit)

    def summary(self) -> dict:
        out: dict = {"files": len(self.rows), "dropped": dict(self.dropped),
                     "missing_blobs": self.missing}
        for role in ("train", "eval"):
            for kind in ("speech", "noise"):
                rs = [r for r in self.rows if r["role"] == role and r["kind"] == kind]
                d = {"files": len(rs), "hours": round(sum(float(r["seconds"]) for r in rs)
                                                       / 3600, 2)}
                if kind == "speech":
                    d["speakers"] = len({r["speaker"] for r in rs})
                else:
                    d["categories"] = len({r["category"] for r in rs})
                out[f"{role}_{kind}"] = d
        return out


def _name(src: Source, path: str) -> tuple[str, str]:
    parts = Path(path).parts
    speaker = category = ""
    if src.kind == "speech":
        speaker = src.speaker_prefix + parts[src.speaker] if src.speaker is not None else ""
    elif src.category is not None:
        category = parts[src.category]
    return speaker, category


def _out_path(row: dict, path: str) -> str:
    group = row["speaker"] or row["category"] or "all"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem)
    return f"{row['role']}/{row['kind']}/{row['source']}/{group}/{stem}.flac"


def build(sources: list[Source], mirrors: Path, out: Path | None, commercial_only: bool = False,
          progress: Callable[[int, int, str], None] | None = None) -> BuildReport:
    """Convert every selected file; writes FLACs under ``out`` (None: only compute the
    manifest rows, for ``--check``). Files already present with the same source sha256 in
    ``out``'s manifest are not converted again."""
    rep = BuildReport()
    done_before = {}
    if out is not None and (out / "manifest.csv").is_file():
        done_before = {(r["repo"], r["path"]): r for r in read_manifest(out / "manifest.csv")}
    plan = []
    for src in sources:
        if commercial_only and not src.commercial:
            continue
        gitdir = find_mirror(mirrors, src.repo)
        plan.append((src, gitdir, select(list_blobs(gitdir, src.commit), src)))
    total, n = sum(len(p[2]) for p in plan), 0
    used: set[str] = set()
    for src, gitdir, files in plan:
        by_oid = {oid: (path, size) for path, oid, size in files}
        for oid, data in read_blobs(gitdir, [oid for _, oid, _ in files]):
            path = by_oid[oid][0]
            n += 1
            if progress is not None:
                progress(n, total, src.name)
            if data is None:
                rep.missing += 1
                continue
            sha = hashlib.sha256(data).hexdigest()
            speaker, category = _name(src, path)
            role = noise_role(src, category, path) if src.kind == "noise" else src.role
            row = {"role": role, "kind": src.kind, "source": src.name, "speaker": speaker,
                   "category": category, "repo": src.repo, "commit": src.commit,
                   "path": path, "sha256": sha, "licence": src.licence,
                   "commercial": "yes" if src.commercial else "no"}
            row["file"] = _out_path(row, path)
            if row["file"] in used:  # two sources names that sanitise alike
                row["file"] = row["file"][:-5] + f"-{sha[:8]}.flac"
            used.add(row["file"])
            prev = done_before.get((src.repo, path))
            if (out is not None and prev and prev["sha256"] == sha
                    and prev["file"] == row["file"] and (out / row["file"]).is_file()):
                rep.rows.append(prev)
                continue
            x, why = convert(data, src)
            if x is None:
                rep.dropped[why] = rep.dropped.get(why, 0) + 1
                continue
            row["seconds"] = f"{len(x) / RATE:.3f}"
            if out is not None:
                dst = out / row["file"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(f".{dst.name}.part")
                sf.write(tmp, x, RATE, subtype="PCM_16", format="FLAC")
                os.replace(tmp, dst)
            rep.rows.append(row)
    rep.rows.sort(key=lambda r: r["file"])
    return rep


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Atomic CSV write: a crash leaves the old manifest, never half a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def check(rows: list[dict], committed: Path = MANIFEST) -> list[str]:
    """Differences between built rows and the committed manifest (empty list = identical)."""
    if not committed.is_file():
        return [f"{committed} does not exist"]
    want = {r["file"]: r for r in read_manifest(committed)}
    got = {r["file"]: r for r in rows}
    diffs = [f"missing: {f}" for f in sorted(set(want) - set(got))]
    diffs += [f"extra: {f}" for f in sorted(set(got) - set(want))]
    for f in sorted(set(want) & set(got)):
        for k in ("sha256", "seconds", "role", "speaker", "category"):
            if want[f][k] != got[f][k]:
                diffs.append(f"{f}: {k} {want[f][k]} != {got[f][k]}")
    return diffs
