"""SPEC §7 from telemetry to a strategy: k-means → K uniform bins → GA over a link model.

    records (Telemetry + the params active when measured)
      → k-means (scikit-learn, standardised monitoring vectors): cluster centres = the link
        conditions seen, weighted by how often
      → K uniform bins per monitoring parameter (host.kbins) → bin indices of each centre
      → initial strategies from those bins (more jitter → more buffer, more loss/load → lower
        bitrate, heavy loss → TCP) → GA (host.ga) minimising the expected C (host.fitness)
        predicted by LinkModel for every cluster centre.

LinkModel (the "fitness model fitted to telemetry"), per condition (latency L, loss p, jitter
J, capacity Cap) and candidate (bitrate b, protocol, buffer B, share s):
    overload   o = max(0, 1.1·b / (s·Cap) − 1);  p' = p + o/(1+o)       (congestion loss)
    UDP:  lost = p';  delay = L;  late = exp(−B / (a·J))
    TCP:  lost = 0;   delay = L + p'·(2L + 200 ms);  late = exp(−B / (a·(J + p'·(2L + 200))))
    C = fitness.cost(quality(b, lost + late, snr), delay, B, b)
``a`` (how many jitter units the delay spread reaches) is fitted to the measured late-packet
rate of the records: a = median of −B / (J · ln(late/50)) over records with late packets;
2.0 when none. Capacity per cluster: the median of the capacity the receiver measured with
probe trains (``capacity_kbps``, edge/transport/capacity.py) over its records; for records
without one (TCP, probing off, older files) (measured or configured bitrate) /
(bandwidth_util·share), which on a link the stream does not fill is just its own bitrate.
``tune --capacity`` overrides both.

Limitation: k-means sees the telemetry as measured, so with a ``collect --sweep`` a parameter
set that overloads the link (loss from its own bitrate) shows up as a lossy link condition;
the GA then hedges against it. Sweep within sane ranges, or collect without a sweep.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge import validate
from edge.errors import HushlinkError
from edge.params import Telemetry, TransportParams
from host import fitness, ga, kbins

FIELDS = Telemetry.MONITORED  # latency_ms, loss_pct, jitter_ms, bandwidth_util, snr_db


class CalibrationError(HushlinkError):
    pass


@dataclass(frozen=True)
class Record:
    telemetry: Telemetry
    params: TransportParams


@dataclass(frozen=True)
class Skipped:
    """A line of a telemetry file that is not a valid record, and why."""

    line: int
    reason: str


def parse_record(line: bytes) -> Record | None:
    """One ``collect`` line checked against the schema (a JSON object; ``telemetry``: every
    field a finite number in ``Telemetry.RANGES``; ``params``: valid TransportParams).
    None for an interval without packets (null latency: nothing to learn). Raises
    ValueError saying what is wrong."""
    try:
        d = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"a JSON {type(d).__name__} where an object was expected")
    tel = d.get("telemetry", d)
    if isinstance(tel, dict) and any(v is None or (isinstance(v, float) and v != v)
                                     for v in tel.values()):
        return None
    try:
        return Record(Telemetry.parse(tel), TransportParams.from_dict(d.get("params") or {}))
    except HushlinkError as e:
        raise ValueError(str(e)) from None


def read_records(path: str | Path) -> tuple[list[Record], list[Skipped]]:
    """A ``collect`` file: JSON lines ``{"telemetry": {...}, "params": {...}}`` (plain
    Telemetry lines are accepted too, with default params). Lines that are not valid
    records are skipped and returned with their line numbers."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CalibrationError(f"cannot read {path}: {e.strerror}") from None
    out, skipped = [], []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = parse_record(line)
        except ValueError as e:
            skipped.append(Skipped(n, str(e)))
            continue
        if rec is not None:
            out.append(rec)
    return out, skipped


def describe_skipped(skipped: list[Skipped], show: int = 5) -> str:
    """``skipped 3 malformed line(s): line 4 (...), line 9 (...)``: one line."""
    first = ", ".join(f"line {s.line} ({s.reason})" for s in skipped[:show])
    more = f", and {len(skipped) - show} more" if len(skipped) > show else ""
    return f"skipped {len(skipped)} malformed line(s): {first}{more}"


def load_records(path: str | Path, on_skip=None) -> list[Record]:
    """``read_records``, needing at least two records; ``on_skip(message)`` hears about
    skipped lines (one line naming the file and them)."""
    out, skipped = read_records(path)
    if len(out) < 2:  # the error names the skipped lines: no warning as well
        why = f"; {describe_skipped(skipped, 3)}" if skipped else ""
        raise CalibrationError(f"{path}: {len(out)} valid record(s){why}; collect at least "
                               "a few seconds")
    if skipped and on_skip is not None:
        on_skip(f"{path}: {describe_skipped(skipped)}")
    return out


def capacity_kbps(r: Record) -> float:
    """The link's capacity in one record: measured by probe trains, else inferred from the
    utilisation of the allocation (which only knows what the stream used)."""
    if r.telemetry.capacity_kbps > 0:
        return r.telemetry.capacity_kbps
    rate = r.telemetry.bitrate_kbps or r.params.bitrate_kbps
    return rate / max(r.telemetry.bandwidth_util * r.params.share, 1e-3)


def cluster_capacity_kbps(members: list[Record], records: list[Record]) -> float:
    """A cluster's capacity: the median of its members' measured ones; when none has one (the
    first second of a stream has no estimate yet) the median measured over all ``records``;
    without any measurement, the median inferred from the members' bandwidth use."""
    def measured(rs):
        return [r.telemetry.capacity_kbps for r in rs if r.telemetry.capacity_kbps > 0]

    vals = measured(members) or measured(records) or [capacity_kbps(r) for r in members]
    return float(np.median(vals))


def fit_jitter_scale(records: list[Record]) -> float:
    vals = []
    for r in records:
        late = r.telemetry.late / fitness.PACKETS_PER_S
        if 0 < late < 1 and r.telemetry.jitter_ms > 0:
            vals.append(-r.params.buffer_ms / (r.telemetry.jitter_ms * math.log(late)))
    return float(np.median(vals)) if vals else 2.0


@dataclass(frozen=True)
class Condition:
    latency_ms: float
    loss_pct: float
    jitter_ms: float
    capacity_kbps: float
    snr_db: float
    weight: float = 1.0  # share of the records in this cluster


@dataclass(frozen=True)
class LinkModel:
    conditions: tuple[Condition, ...]
    jitter_scale: float = 2.0
    weights: fitness.Weights = fitness.Weights()

    def predict(self, p: TransportParams, c: Condition) -> dict:
        over = max(0.0, 1.1 * p.bitrate_kbps / (p.share * c.capacity_kbps) - 1.0)
        loss = min(1.0, c.loss_pct / 100.0 + over / (1.0 + over))
        a = max(self.jitter_scale, 1e-3)
        if p.protocol == "tcp":
            extra = loss * (2 * c.latency_ms + 200.0)
            lost, delay = 0.0, c.latency_ms + extra
            late = math.exp(-p.buffer_ms / (a * max(c.jitter_ms + extra, 1e-3)))
        else:
            lost, delay = loss, c.latency_ms
            late = math.exp(-p.buffer_ms / (a * max(c.jitter_ms, 1e-3)))
        q = fitness.quality(p.bitrate_kbps, lost + late, c.snr_db)
        return {"quality": q, "latency_ms": delay, "lost": lost, "late": late,
                "cost": fitness.cost(q, delay, p.buffer_ms, p.bitrate_kbps, self.weights)}

    def cost(self, p: TransportParams) -> float:
        """Expected C over the conditions (weighted by cluster size)."""
        return sum(c.weight * self.predict(p, c)["cost"] for c in self.conditions)

    def cost_genes(self, genes: np.ndarray) -> float:
        return self.cost(ga.to_params(genes))


def cluster(X: np.ndarray, n_clusters: int, seed: int = 0):
    """k-means on standardised columns. Returns (centres in original units (k, d), labels)."""
    from sklearn.cluster import KMeans

    n_clusters = max(1, min(n_clusters, len(np.unique(X, axis=0))))
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd[sd == 0] = 1.0
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit((X - mu) / sd)
    return km.cluster_centers_ * sd + mu, km.labels_


def seeds_from_bins(bins: np.ndarray, k: int) -> np.ndarray:
    """Initial strategies (gene vectors) from the 0-based bin indices of each cluster centre
    (columns in FIELDS order)."""
    out = []
    for b in np.atleast_2d(bins):
        lat, loss, jit, util, _ = (int(v) for v in b)
        frac = lambda i: (i + 0.5) / k  # noqa: E731  (centre of bin i as a fraction)
        buffer = ga.LO[2] + frac(max(jit, lat)) * (ga.HI[2] - ga.LO[2])
        bitrate = ga.HI[0] - frac(max(loss, util)) * (ga.HI[0] - ga.LO[0])
        proto = 1.0 if k > 1 and loss >= k // 2 else 0.0  # loss in the upper half: TCP
        share = 0.5 + 0.5 * frac(util)
        out.append([bitrate, proto, buffer, share])
    return ga.clip(np.array(out))


@dataclass
class TuneResult:
    params: TransportParams
    predicted_cost: float
    default_cost: float
    model: LinkModel
    centres: np.ndarray
    labels: np.ndarray
    bins: np.ndarray
    edges: list[np.ndarray]
    ga: ga.GAResult
    X: np.ndarray = field(repr=False, default=None)
    choices: dict = field(default_factory=dict)  # "clusters"/"bins" -> host.choose.Choice

    def to_dict(self, seed: int, cfg: ga.GAConfig) -> dict:
        return {
            "params": self.params.to_dict(),
            "predicted_cost": self.predicted_cost,
            "default_params": TransportParams().to_dict(),
            "default_predicted_cost": self.default_cost,
            "weights": self.model.weights.to_dict(),
            "jitter_scale": self.model.jitter_scale,
            "seed": seed, "ga": {"pop": cfg.pop, "generations": cfg.generations,
                                 "evaluations": self.ga.evaluations},
            "fields": list(FIELDS),
            "chosen": {k: c.to_dict() for k, c in self.choices.items()},
            "clusters": [{"centre": dict(zip(FIELDS, map(float, c), strict=True)),
                          "bins": [int(v) for v in b], "weight": cond.weight,
                          "capacity_kbps": cond.capacity_kbps}
                         for c, b, cond in zip(self.centres, self.bins, self.model.conditions,
                                               strict=True)],
            "bin_edges": {f: [float(v) for v in e] for f, e in zip(FIELDS, self.edges,
                                                                    strict=True)},
            "history": [{"best": g.best, "mean": g.mean, "s1": g.s1, "s2": g.s2,
                         "groups": list(g.sizes)} for g in self.ga.history],
        }


def build_model(records: list[Record], n_clusters: int, k_bins: int,
                weights: fitness.Weights, seed: int = 0, capacity: float | None = None):
    X = np.array([r.telemetry.vector() for r in records])
    centres, labels = cluster(X, n_clusters, seed)
    conds = []
    for j, c in enumerate(centres):
        members = labels == j
        cap = capacity or cluster_capacity_kbps(
            [r for r, m in zip(records, members, strict=True) if m], records)
        conds.append(Condition(latency_ms=float(c[0]), loss_pct=float(c[1]),
                               jitter_ms=float(c[2]), capacity_kbps=float(cap),
                               snr_db=float(c[4]), weight=float(members.mean())))
    _, edges = kbins.discretize(X, k_bins)
    bins = np.stack([kbins.bin_index(centres[:, j], edges[j]) for j in range(X.shape[1])],
                    axis=1)
    model = LinkModel(tuple(conds), fit_jitter_scale(records), weights)
    return model, X, centres, labels, bins, edges


def choose(records: list[Record], n_clusters: int | None, k_bins: int | None,
           seed: int = 0) -> dict:
    """``{"clusters": Choice, "bins": Choice}``: the given values, or (``None``) chosen
    from the monitoring vectors by silhouette (host.choose)."""
    from host.choose import Choice, choose_bins, choose_clusters

    X = np.array([r.telemetry.vector() for r in records])
    given = lambda v: Choice(v, {}, "given")  # noqa: E731
    return {"clusters": given(n_clusters) if n_clusters else choose_clusters(X, seed),
            "bins": given(k_bins) if k_bins else choose_bins(X, seed)}


def tune(records: list[Record], *, n_clusters: int | None = None, k_bins: int | None = None,
         weights: fitness.Weights = fitness.Weights(), cfg: ga.GAConfig = ga.GAConfig(),
         pins: dict | None = None, on_generation=None,
         capacity_kbps: float | None = None) -> TuneResult:
    """The whole SPEC §7 pipeline. ``pins`` fixes parameters (e.g. ``{"protocol": "udp"}``
    where the network allows only UDP); the GA searches the rest. ``n_clusters`` / ``k_bins``
    ``None``: chosen from the data (``choose``), recorded in ``TuneResult.choices``.
    ``capacity_kbps``: the link's capacity when known better than measured (else from the
    records, ``cluster_capacity_kbps``)."""
    pins = dict(pins or {})
    TransportParams().replace(**pins)  # validate the pins now (ParamsError)
    choices = choose(records, n_clusters, k_bins, cfg.seed)
    n_clusters, k_bins = choices["clusters"].value, choices["bins"].value
    model, X, centres, labels, bins, edges = build_model(records, n_clusters, k_bins, weights,
                                                         cfg.seed, capacity_kbps)
    seeds = np.vstack([seeds_from_bins(bins, k_bins), ga.from_params(TransportParams())])
    res = ga.run(lambda g: model.cost(ga.to_params(g).replace(**pins)), seeds, cfg,
                 on_generation)
    best = ga.to_params(res.best).replace(**pins)
    return TuneResult(best, res.best_cost, model.cost(TransportParams()), model, centres,
                      labels, bins, edges, res, X, choices)


# ------------------------------------------------------------------- strategy files (schema)
def _finite(where: str, v: object) -> float:
    return validate.number(where, v, error=CalibrationError)


def _check_strategy(d: object, full: bool) -> dict:
    """Raises CalibrationError naming the first field that is missing or malformed."""
    if not isinstance(d, dict):
        raise CalibrationError(f"a JSON {type(d).__name__} where an object was expected")

    def get(key: str, typ: type):
        if key not in d:
            raise CalibrationError(f"no {key!r}")
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            raise CalibrationError(f"{key!r} must be a {typ.__name__}")
        return d[key]

    try:
        TransportParams.from_dict(get("params", dict))
        fitness.Weights(**get("weights", dict))
    except TypeError as e:
        raise CalibrationError(f"weights: {e}") from None
    except HushlinkError as e:
        raise CalibrationError(str(e)) from None
    if not full:
        return d
    try:
        TransportParams.from_dict(get("default_params", dict))
    except HushlinkError as e:
        raise CalibrationError(f"default_params: {e}") from None
    for key in ("predicted_cost", "default_predicted_cost"):
        _finite(key, d.get(key))
    clusters = get("clusters", list)
    if not clusters:
        raise CalibrationError("no clusters")
    for i, c in enumerate(clusters):
        if not isinstance(c, dict) or not isinstance(c.get("centre"), dict):
            raise CalibrationError(f"clusters[{i}] must be an object with a centre")
        for f in FIELDS:
            _finite(f"clusters[{i}].centre.{f}", c["centre"].get(f))
        validate.number(f"clusters[{i}].weight", c.get("weight"), lo=0, hi=1,
                        error=CalibrationError)
        bins = c.get("bins")
        if not (isinstance(bins, list) and len(bins) == len(FIELDS)
                and all(isinstance(b, int) and not isinstance(b, bool) for b in bins)):
            raise CalibrationError(f"clusters[{i}].bins must be {len(FIELDS)} integers")
    edges = get("bin_edges", dict)
    lengths = set()
    for f in FIELDS:
        e = edges.get(f)
        if not isinstance(e, list) or len(e) < 2:
            raise CalibrationError(f"bin_edges.{f} must be a list of at least 2 numbers")
        for j, v in enumerate(e):
            _finite(f"bin_edges.{f}[{j}]", v)
        lengths.add(len(e))
    if len(lengths) != 1:
        raise CalibrationError("bin_edges lists differ in length (one K for all fields)")
    for i, h in enumerate(get("history", list)):
        if not isinstance(h, dict):
            raise CalibrationError(f"history[{i}] must be an object")
        for k in ("best", "mean", "s1", "s2"):
            _finite(f"history[{i}].{k}", h.get(k))
    get("ga", dict)
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise CalibrationError("'seed' must be a non-negative integer")
    return d


def load_strategy(path: str | Path, *, full: bool = True) -> dict:
    """A ``tune`` output, checked against its schema (``full``: everything ``report``
    plots; otherwise what ``apply`` needs: params and weights). Raises CalibrationError
    naming the file and the field."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise CalibrationError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise CalibrationError(f"{path}: not a strategy file from `tune` (not JSON: "
                               f"{type(e).__name__})") from None
    try:
        return _check_strategy(d, full)
    except CalibrationError as e:
        raise CalibrationError(f"{path}: not a strategy file from `tune` ({e})") from None
