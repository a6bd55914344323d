"""Genetic algorithm over transport strategies with the three fitness groups of SPEC §7.

A strategy is a gene vector ``[bitrate_kbps, protocol (0 udp / 1 tcp), buffer_ms, share]``.
C is a cost (``host.fitness``: lower is better). Each generation, with thresholds S1 < S2:

    group 1: C < S1          reproduce (carried over unchanged) + crossover + mutate
    group 2: S1 <= C < S2    reproduce (carried over unchanged) + crossover + mutate
    group 3: C >= S2         crossover + mutate only (the individual itself is not kept)

Every individual produces one child: uniform crossover with a partner drawn from groups 1–2
(binary tournament), then mutation. The next population is the best ``pop`` of the carried-over
individuals and the children (a (μ+λ) step), so a generation costs ``pop`` evaluations.
S1 and S2 are fixed numbers, or by default the 1/3 and 2/3 quantiles of the current
population's C. Deterministic for a given seed (``numpy.random.default_rng``). Pure: the cost
function is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.params import BITRATE_KBPS, BUFFER_MS, SHARE, SHARE_SEARCH_MIN, TransportParams

# the search box, from the parameters' own ranges (edge/params.py)
LO = np.array([BITRATE_KBPS[0], 0.0, BUFFER_MS[0], SHARE_SEARCH_MIN], dtype=float)
HI = np.array([BITRATE_KBPS[1], 1.0, BUFFER_MS[1], SHARE[1]], dtype=float)
OPERATORS = {1: ("reproduce", "crossover", "mutate"), 2: ("reproduce", "crossover", "mutate"),
             3: ("crossover", "mutate")}


@dataclass(frozen=True)
class GAConfig:
    pop: int = 24
    generations: int = 20
    s1: float | None = None  # fixed thresholds; None = quantiles of the population
    s2: float | None = None
    s1_quantile: float = 1 / 3
    s2_quantile: float = 2 / 3
    p_mutate: float = 0.3  # per gene
    sigma: float = 0.1  # mutation step, fraction of the gene's range
    seed: int = 0


def clip(genes: np.ndarray) -> np.ndarray:
    g = np.clip(np.asarray(genes, dtype=float), LO, HI)
    g[..., 0] = np.round(g[..., 0])
    g[..., 1] = np.round(g[..., 1])
    g[..., 2] = np.round(g[..., 2])
    g[..., 3] = np.round(g[..., 3], 2)
    return g


def to_params(genes: np.ndarray, base: TransportParams = TransportParams()) -> TransportParams:
    g = clip(genes)
    return base.replace(bitrate_kbps=int(g[0]), protocol="tcp" if g[1] >= 0.5 else "udp",
                        buffer_ms=int(g[2]), share=float(g[3]))


def from_params(p: TransportParams) -> np.ndarray:
    return np.array([p.bitrate_kbps, 1.0 if p.protocol == "tcp" else 0.0, p.buffer_ms,
                     p.share])


def group_of(c: float, s1: float, s2: float) -> int:
    if c < s1:
        return 1
    return 2 if c < s2 else 3


def thresholds(costs: np.ndarray, cfg: GAConfig) -> tuple[float, float]:
    s1 = cfg.s1 if cfg.s1 is not None else float(np.quantile(costs, cfg.s1_quantile))
    s2 = cfg.s2 if cfg.s2 is not None else float(np.quantile(costs, cfg.s2_quantile))
    if not s1 < s2:
        s2 = s1 + 1e-12
    return s1, s2


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = rng.random(a.shape) < 0.5
    return np.where(mask, a, b)


def mutate(g: np.ndarray, cfg: GAConfig, rng: np.random.Generator) -> np.ndarray:
    proto = round(float(g[1]))
    hit = rng.random(g.shape) < cfg.p_mutate
    step = rng.normal(0.0, cfg.sigma, g.shape) * (HI - LO)
    g = np.where(hit, g + step, g)
    if hit[1]:
        g[1] = 1.0 - proto  # protocol is binary: mutation flips it
    return clip(g)


@dataclass
class Generation:
    best: float
    mean: float
    s1: float
    s2: float
    sizes: tuple[int, int, int]  # individuals in groups 1, 2, 3
    origins: list[tuple[str, int]] = field(default_factory=list)  # per new individual


def next_generation(pop: np.ndarray, costs: np.ndarray, cost_fn: Callable[[np.ndarray], float],
                    cfg: GAConfig, rng: np.random.Generator):
    """One step. Returns ``(new_pop, new_costs, Generation)``; ``Generation.origins`` says
    for each new individual whether it was ``("reproduce", group)`` or
    ``("offspring", group of the first parent)``."""
    s1, s2 = thresholds(costs, cfg)
    groups = np.array([group_of(c, s1, s2) for c in costs])
    parents = np.flatnonzero(groups < 3)
    if parents.size == 0:  # degenerate (all equal): everyone may parent
        parents = np.arange(len(pop))
    cand, cand_cost, origin = [], [], []
    for i in parents:  # groups 1 and 2 reproduce
        cand.append(pop[i])
        cand_cost.append(costs[i])
        origin.append(("reproduce", int(groups[i])))
    for i in range(len(pop)):  # everyone crosses over and mutates
        a, b = rng.choice(parents, 2)
        partner = a if costs[a] <= costs[b] else b
        child = mutate(crossover(pop[i], pop[partner], rng), cfg, rng)
        cand.append(child)
        cand_cost.append(cost_fn(child))
        origin.append(("offspring", int(groups[i])))
    order = np.argsort(np.asarray(cand_cost), kind="stable")[:len(pop)]
    new_pop = np.stack([cand[j] for j in order])
    new_cost = np.asarray(cand_cost)[order]
    sizes = tuple(int((groups == g).sum()) for g in (1, 2, 3))
    gen = Generation(float(new_cost[0]), float(new_cost.mean()), s1, s2, sizes,
                     [origin[j] for j in order])
    return new_pop, new_cost, gen


@dataclass
class GAResult:
    best: np.ndarray
    best_cost: float
    history: list[Generation]
    evaluations: int
    trace: list[float]  # best cost so far after each evaluation


def run(cost_fn: Callable[[np.ndarray], float], seeds: np.ndarray, cfg: GAConfig = GAConfig(),
        on_generation: Callable[[int, Generation], None] | None = None) -> GAResult:
    """Initial population: ``seeds`` (from the discretised features), filled up to ``pop``
    with mutated copies of them; then ``generations`` steps."""
    rng = np.random.default_rng(cfg.seed)
    seeds = clip(np.atleast_2d(seeds))
    pop = [seeds[i % len(seeds)] if i < len(seeds)
           else mutate(seeds[i % len(seeds)], GAConfig(p_mutate=0.8, sigma=0.25), rng)
           for i in range(cfg.pop)]
    pop = np.stack(pop)
    trace: list[float] = []

    def counted(g):
        c = float(cost_fn(g))
        trace.append(min(c, trace[-1]) if trace else c)
        return c

    costs = np.array([counted(g) for g in pop])
    history = []
    for gen in range(cfg.generations):
        pop, costs, info = next_generation(pop, costs, counted, cfg, rng)
        history.append(info)
        if on_generation:
            on_generation(gen, info)
    i = int(np.argmin(costs))
    return GAResult(pop[i], float(costs[i]), history, len(trace), trace)
