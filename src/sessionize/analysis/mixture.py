"""A mixture of log-normal components fitted to the gaps between events (EM, numpy only).

Halfaker et al., "User Session Identification Based on Strong Regularities in
Inter-activity Time" (WWW 2015): the logarithm of the time between a user's
consecutive actions is well described by a mixture of normal components, the fastest
of them the pauses inside a visit and the others the pauses between visits. The
threshold that separates visits is where the two groups are equally likely.

Why numpy and not scikit-learn: a one-dimensional mixture of a handful of components is
thirty lines of EM, while scikit-learn (and the scipy it needs) adds well over 100 MiB
to an install whose engine is 71 MiB, for one function. Writing it here also lets the
fit run on the binned histogram (below), which scikit-learn's ``GaussianMixture`` does
not take (it wants one row per gap).

Why the histogram: both plans produce the same log-gap histogram (bins of 1/20 decade),
so a fit of the bin counts gives the same numbers on both plans and on every run, at a
cost that does not grow with the data (about 140 bins, whatever the number of gaps).
Every fit starts from fixed positions (quantiles, and even spacing); there is no random
start anywhere.

>>> import numpy as np
>>> x = np.arange(0, 140) / 20 + 0.025                 # bin centres, log10 seconds
>>> counts = 1000 * np.exp(-0.5 * ((x - 1.3) / 0.3) ** 2) \\
...     + 400 * np.exp(-0.5 * ((x - 4.9) / 0.4) ** 2)
>>> m = fit(x, counts, 2)
>>> [round(c.mean, 2) for c in m.components]
[1.3, 4.9]
>>> s = split(m)
>>> 2.5 < s.threshold_log10 < 3.6 and s.overlap < 0.001
True
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["Component", "Mixture", "Split", "fit", "select", "split", "MAX_COMPONENTS"]

#: The most components BIC may choose (more only fits the shape of one hump).
MAX_COMPONENTS = 4
#: No component narrower than this (decades): a spike in one bin would otherwise
#: collapse a component to zero width (heartbeats at a fixed period do this).
MIN_SD = 0.05
_SQRT_2PI = math.sqrt(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class Component:
    """One log-normal component: its share of gaps, mean and spread of log10(gap seconds)."""

    weight: float
    mean: float  # log10 seconds
    sd: float  # decades

    @property
    def median_seconds(self) -> float:
        return 10 ** self.mean

    def to_dict(self) -> dict[str, float]:
        return {"weight": self.weight, "median_seconds": self.median_seconds,
                "sd_decades": self.sd}


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Components ordered fastest first, the log-likelihood of the counts and its BIC."""

    components: tuple[Component, ...]
    loglik: float
    bic: float
    n: float

    def densities(self, x: np.ndarray) -> np.ndarray:
        """Weighted density of each component at ``x`` (log10 seconds): shape (k, len(x))."""
        w = np.array([c.weight for c in self.components])[:, None]
        m = np.array([c.mean for c in self.components])[:, None]
        s = np.array([c.sd for c in self.components])[:, None]
        return w * np.exp(-0.5 * ((x[None, :] - m) / s) ** 2) / (s * _SQRT_2PI)


@dataclasses.dataclass(frozen=True)
class Split:
    """Where the fastest ``within`` components and the rest are equally likely.

    ``overlap``: the share of all gaps that the fitted model puts on the wrong side of
    the threshold (the area under the smaller of the two groups' densities), divided by
    the weight of the smaller group: 0 when the groups are apart, towards 1 when they
    are indistinguishable.
    """

    within: int
    threshold_log10: float
    overlap: float
    within_weight: float

    @property
    def threshold_seconds(self) -> float:
        return 10 ** self.threshold_log10


def _normal(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((x[None, :] - m[:, None]) / s[:, None]) ** 2) / (s[:, None] * _SQRT_2PI)


def _em(x: np.ndarray, c: np.ndarray, w: np.ndarray, m: np.ndarray, s: np.ndarray,
        width: float, iterations: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    n = c.sum()
    previous = -np.inf
    loglik = -np.inf
    for _ in range(iterations):
        joint = w[:, None] * _normal(x, m, s)
        total = joint.sum(axis=0)
        total = np.maximum(total, 1e-300)
        loglik = float(np.sum(c * np.log(total * width)))
        if loglik - previous < 1e-9 * n:
            break
        previous = loglik
        resp = joint / total * c  # counts each component takes from each bin
        nk = np.maximum(resp.sum(axis=1), 1e-12)
        w = nk / n
        m = resp @ x / nk
        s = np.sqrt(np.maximum((resp * (x[None, :] - m[:, None]) ** 2).sum(axis=1) / nk,
                               MIN_SD ** 2))
    return w, m, s, loglik


def fit(x: np.ndarray, counts: np.ndarray, k: int, *, width: float = 0.05) -> Mixture:
    """Fit ``k`` components to bin centres ``x`` (log10 seconds) holding ``counts`` gaps.

    EM stops when an iteration improves the log-likelihood by less than 1e-9 per gap,
    or after 500 iterations (two near-equal components sharing one hump converge slowly
    and move the cut little).

    Fixed starts, no random state: means at the counts' quantiles; means evenly spaced
    between the 5th and 95th percentiles; and three starts whose slowest component holds
    10, 20 or 30 % of the gaps (:data:`SLOW_SHARES`). The best likelihood wins, except
    that among fits whose log-likelihood is within :data:`TIE_LOGLIK` of the best the one
    with the smallest slowest component is kept: where the gaps form one hump, a large
    slow group and a small one fit equally well, and the small one is the one that says
    a visit holds several events (docs/report.md, "One hump").
    """
    x = np.asarray(x, float)
    c = np.asarray(counts, float)
    n = float(c.sum())
    cdf = np.cumsum(c) / n
    def quantile(q: float) -> float:
        return float(x[min(np.searchsorted(cdf, q), len(x) - 1)])

    mean = float(c @ x / n)
    spread = max(math.sqrt(float(c @ (x - mean) ** 2) / n), MIN_SD)
    even = np.full(k, 1 / k)
    starts = [(even, np.array([quantile((i + 0.5) / k) for i in range(k)])),
              (even, np.linspace(quantile(0.05), quantile(0.95), k))]
    for slow in SLOW_SHARES:  # the rest share 1 - slow evenly, at their quantiles
        rest = (1 - slow) / (k - 1) if k > 1 else 1.0
        w0 = np.append(np.full(k - 1, rest), slow) if k > 1 else even
        m0 = np.array([quantile(min(float(np.cumsum(w0)[i] - w0[i] / 2), 0.999))
                       for i in range(k)])
        starts.append((w0, m0))
    fits = [_em(x, c, w0.copy(), m0.astype(float), np.full(k, max(spread / k, MIN_SD)), width)
            for w0, m0 in starts]
    top = max(f[3] for f in fits)
    def slowest_share(f: tuple) -> float:
        return float(f[0][int(np.argmax(f[1]))])
    w, m, s, loglik = min((f for f in fits if f[3] >= top - TIE_LOGLIK), key=slowest_share)
    order = np.argsort(m, kind="stable")
    components = tuple(Component(float(w[i]), float(m[i]), float(s[i])) for i in order)
    bic = -2 * loglik + (3 * k - 1) * math.log(max(n, 1))
    return Mixture(components, loglik, bic, n)


#: Starts whose slowest component holds this share of the gaps (besides the two
#: even-weight starts): EM from even weights finds two halves of one hump.
SLOW_SHARES = (0.1, 0.2, 0.3)
#: Fits whose log-likelihoods differ by less than this are equally good (a likelihood
#: ratio under e^2); among them the smallest slowest component is kept.
TIE_LOGLIK = 2.0


def select(x: np.ndarray, counts: np.ndarray, *, width: float = 0.05,
           max_components: int = MAX_COMPONENTS) -> tuple[Mixture, dict[int, float]]:
    """The fit of 2 .. ``max_components`` components with the lowest BIC, and the BIC of
    each fit made by number of components (1 included, to tell whether one hump fits
    best). Components are added while the BIC falls: a fourth is not tried when the
    third did not help."""
    fits = {k: fit(x, counts, k, width=width) for k in (1, 2)}
    for k in range(3, max_components + 1):
        fits[k] = fit(x, counts, k, width=width)
        if fits[k].bic >= fits[k - 1].bic:
            break
    best = min((f for k, f in fits.items() if k >= 2), key=lambda f: f.bic)
    return best, {k: f.bic for k, f in fits.items()}


def split(mixture: Mixture, *, grid: np.ndarray | None = None) -> Split:
    """The boundary between the fastest components and the rest that separates best.

    For each way of cutting the components (fastest j | the rest) the threshold is where
    the two groups' densities cross between their nearest means; the cut with the least
    normalised overlap wins (ties: the one with the larger smaller group).
    """
    xs = np.linspace(-2.0, 9.0, 4401) if grid is None else grid
    dx = float(xs[1] - xs[0])
    dens = mixture.densities(xs)
    comps = mixture.components
    best: Split | None = None
    for j in range(1, len(comps)):
        f_within = dens[:j].sum(axis=0)
        f_between = dens[j:].sum(axis=0)
        w_within = sum(c.weight for c in comps[:j])
        smaller = min(w_within, 1 - w_within)
        if smaller <= 0:
            continue
        lo, hi = comps[j - 1].mean, comps[j].mean
        inside = (xs >= lo) & (xs <= hi)
        if inside.sum() < 2:
            continue
        xi = xs[inside]
        diff = np.log(np.maximum(f_within[inside], 1e-300)) - np.log(
            np.maximum(f_between[inside], 1e-300))
        changes = np.flatnonzero((diff[:-1] >= 0) & (diff[1:] < 0))
        if not len(changes):
            continue
        # several crossings (unequal spreads): the one where the mixture is thinnest
        total = (f_within + f_between)[inside]
        at = changes[np.argmin(total[changes])]
        # linear interpolation of the sign change
        t = xi[at] + (xi[at + 1] - xi[at]) * diff[at] / (diff[at] - diff[at + 1])
        overlap = float(np.minimum(f_within, f_between).sum() * dx) / smaller
        candidate = Split(j, float(t), min(overlap, 1.0), w_within)
        if best is None or (candidate.overlap < best.overlap - 0.005) or (
                abs(candidate.overlap - best.overlap) <= 0.005
                and min(candidate.within_weight, 1 - candidate.within_weight)
                > min(best.within_weight, 1 - best.within_weight)):
            best = candidate
    if best is None:  # the groups never cross: cut halfway between the two central means
        j = max(1, len(comps) // 2)
        t = (comps[j - 1].mean + comps[j].mean) / 2
        best = Split(j, t, 1.0, sum(c.weight for c in comps[:j]))
    return best
