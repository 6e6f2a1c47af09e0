"""Size-aware p-values for the distance tests (psi, js, wasserstein): their null distribution at the window's size.

A distance has no p-value of its own, and how large it grows without any drift depends on the
sizes of the two samples: on the 50 bins of a histogram, Jensen-Shannon distances of 0.1 come
from sampling noise alone at 1,000 rows. So a fixed distance threshold false-alarms on small
windows and misses real changes on large ones. Here the statistic's null distribution is drawn
at the sizes of the comparison: `RESAMPLES` times, two samples from the reference's own
distribution, of the reference's size and of the window's (both vary: the reference is a sample
too), their distance computed as the test computes it.

- psi, js: counts per bin drawn from the multinomial of the reference's frequencies, of the
  reference's size and of the window's (its deciles, histogram bins or categories; the
  reference's size is its number of values);
- wasserstein: a sample of n N / (n + N) values drawn with replacement from the reference's
  sample, against that sample (both sides' noise at once, as the effective size of the
  two-sample Kolmogorov-Smirnov statistic has it), normalised as the test normalises; for large
  samples, its limit (see `Nulls._draw_wasserstein`).

The p-value reads the draws: (1 + draws at least as large) / (1 + draws) up to the smallest of
the `TAIL_SHARE` largest draws; beyond it, the tail is exponential with their mean excess (the
peaks-over-threshold tail of Knijnenburg et al., "Fewer permutations, more accurate P-values",
2009), so that p-values go below 1 / (1 + RESAMPLES) without a floor. Measured against 40,000
draws of these nulls (windows of 50 to 5,000 rows), the tails at 0.01, 0.001 and 0.0001 read
0.007-0.016, 0.0005-0.009 and 0.00006-0.002: within a factor of two either way, larger (on the
safe side) for PSI on the smallest windows, whose empty bins make its tail heavier.
A null without spread (a constant reference) gives p 0 beyond its largest draw.

Fits are cached per test, feature and the pair of sizes, the window's to three significant digits
(a null moves by far less than its draws' own noise within 1% of size): a stream of windows of one
size draws each feature's null once, and at most MAX_FITS are kept. The draws are seeded by the
detector's seed, the feature and the sizes, so a window's p-values do not depend on the windows
before it.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scaleml_workloads.drift.statistics import SortedColumns

# Draws per null.
RESAMPLES: Final = 2000
# The share of the largest draws that the exponential tail is fitted to.
TAIL_SHARE: Final = 0.1
# The Wasserstein null: reference values it draws from, at most (evenly spaced in rank), and the
# effective sample size beyond which it draws the limit (a Brownian bridge) instead of counts.
MAX_ATOMS: Final = 5000
BRIDGE_SIZE: Final = 20_000
# Nulls kept, at most (the least recently used go first).
MAX_FITS: Final = 4096
# Draws of the Wasserstein null computed at once (rows of work arrays of MAX_ATOMS values).
_CHUNK: Final = 250

Distance = Callable[[Tensor, Tensor], Tensor]
Key = tuple[str, int, int, int]


@dataclass(frozen=True)
class NullTail:
    """A null distribution by its draws: the empirical tail up to its `TAIL_SHARE` largest, an exponential beyond."""

    draws: npt.NDArray[np.float64]  # sorted ascending
    start: float  # where the exponential tail starts: the smallest of the TAIL_SHARE largest draws
    scale: float  # the mean excess of those draws over `start`

    @classmethod
    def of(cls, draws: Tensor) -> NullTail:
        ordered = np.sort(draws.detach().to("cpu", torch.float64).numpy())
        ordered = ordered[np.isfinite(ordered)]
        top = ordered[-max(1, int(len(ordered) * TAIL_SHARE)) :]
        return cls(ordered, float(top[0]), float(np.mean(top - top[0])))

    def sf(self, value: float) -> float:
        """P(X >= value) under the null, in float64 without a floor beyond the draws (see the module)."""
        count = len(self.draws)
        if count == 0:
            return math.nan
        if value <= self.start:
            at_least = count - int(np.searchsorted(self.draws, value, side="left"))
            return (1 + at_least) / (1 + count)
        above = count - int(np.searchsorted(self.draws, self.start, side="left"))
        if self.scale <= 0:
            return 0.0
        return above / (1 + count) * math.exp(-(value - self.start) / self.scale)


@dataclass
class Nulls:
    """The null distributions of the distance tests one detector has needed, fitted once per feature and sizes."""

    seed: int
    resamples: int = RESAMPLES
    _fits: OrderedDict[Key, NullTail] = field(default_factory=OrderedDict)

    def _fit(self, key: Key, draw: Callable[[], Tensor]) -> NullTail:
        """The null of `key`, drawn the first time it is needed; the least recently used go past MAX_FITS."""
        if key in self._fits:
            self._fits.move_to_end(key)
        else:
            self._fits[key] = NullTail.of(draw())
            if len(self._fits) > MAX_FITS:
                self._fits.popitem(last=False)
        return self._fits[key]

    def binned(
        self,
        test: str,
        reference_frequencies: Tensor,
        reference_sizes: Tensor,
        current_sizes: Tensor,
        observed: Tensor,
        distance: Distance,
        *,
        squared: bool = False,
    ) -> Tensor:
        """p-values of a distance between frequencies per bin (features, bins), NaN-padded bins ignored.

        `squared`: fit the null of the distance squared (a divergence) and read the observed one squared.
        """
        p_values = torch.full_like(observed, math.nan, dtype=torch.float64)
        frequencies = reference_frequencies.detach().to("cpu", torch.float64).numpy()
        for position, (big, small, value) in enumerate(
            zip(reference_sizes.tolist(), current_sizes.tolist(), observed.tolist(), strict=True)
        ):
            if not (math.isfinite(value) and big > 0 and small > 0):
                continue
            bins = frequencies[position][np.isfinite(frequencies[position])]
            key = (test, position, int(big), _rounded(int(small)))
            fit = self._fit(key, functools.partial(self._draw_binned, key, bins, distance, squared))
            p_values[position] = fit.sf(value * value if squared else value)
        return p_values

    def _draw_binned(self, key: Key, bins: npt.NDArray[np.float64], distance: Distance, squared: bool) -> Tensor:
        rng = self._rng(key)
        bins = bins / bins.sum() if bins.sum() > 0 else bins
        reference = rng.multinomial(key[2], bins, size=self.resamples).astype(np.float64)
        current = rng.multinomial(key[3], bins, size=self.resamples).astype(np.float64)
        draws = distance(
            torch.from_numpy(reference / reference.sum(axis=1, keepdims=True)),
            torch.from_numpy(current / current.sum(axis=1, keepdims=True)),
        )
        return draws * draws if squared else draws

    def wasserstein(self, reference: SortedColumns, std: Tensor, current_sizes: Tensor, observed: Tensor) -> Tensor:
        """p-values of the Wasserstein distance (divided by `std` where it is above 0) of each feature."""
        p_values = torch.full_like(observed, math.nan, dtype=torch.float64)
        counts = reference.counts.tolist()
        for position, (small, value) in enumerate(zip(current_sizes.tolist(), observed.tolist(), strict=True)):
            big = counts[position]
            if not (math.isfinite(value) and big > 0 and small > 0):
                continue
            key = ("wasserstein", position, int(big), _rounded(int(small)))
            values = reference.values[position, :big]
            fit = self._fit(key, functools.partial(self._draw_wasserstein, key, values, float(std[position])))
            p_values[position] = fit.sf(value)
        return p_values

    def _draw_wasserstein(self, key: Key, sorted_values: Tensor, deviation: float) -> Tensor:
        """Distances of draws from the reference's sorted values to them: the integral of |F - G| over its steps.

        Both the window and the reference are samples: their difference varies as one sample of
        n N / (n + N) values (the effective size of the two-sample Kolmogorov-Smirnov statistic)
        against the distribution itself, which is what is drawn, against the reference's values
        (at most MAX_ATOMS of them, evenly spaced in rank). Beyond BRIDGE_SIZE values the draw's
        distribution function is the reference's plus a Brownian bridge over sqrt(size), its limit.
        """
        rng = self._rng(key)
        values = sorted_values.detach().to("cpu", torch.float64).numpy()
        big, small = key[2], key[3]
        size = max(1, round(big * small / (big + small)))
        if len(values) > MAX_ATOMS:
            values = values[np.round(np.linspace(0, len(values) - 1, MAX_ATOMS)).astype(np.int64)]
        atoms = len(values)
        steps = np.diff(values)
        reference = np.arange(1, atoms) / atoms
        draws = []
        for start in range(0, self.resamples, _CHUNK):
            rows = min(_CHUNK, self.resamples - start)
            if size > BRIDGE_SIZE:
                walk = np.cumsum(rng.normal(0.0, math.sqrt(1 / atoms), size=(rows, atoms)), axis=1)
                bridge = walk[:, :-1] - reference * walk[:, -1:]
                draws.append(np.abs(bridge) @ steps / math.sqrt(size))
            else:
                drawn = np.cumsum(_counts(rng, atoms, size, rows), axis=1)[:, :-1] / size
                draws.append(np.abs(drawn - reference) @ steps)
        distances = torch.from_numpy(np.concatenate(draws))
        return distances / deviation if deviation > 0 else distances

    def _rng(self, key: Key) -> np.random.Generator:
        test = sum(ord(letter) for letter in key[0])
        return np.random.default_rng([self.seed, test, key[1], key[2], key[3]])


def _counts(rng: np.random.Generator, atoms: int, size: int, rows: int) -> npt.NDArray[np.float64]:
    """(rows, atoms): how often each of `atoms` equally likely values is drawn in `size` draws with replacement."""
    if size > atoms:
        return rng.multinomial(size, np.full(atoms, 1 / atoms), size=rows).astype(np.float64)
    picks = rng.integers(atoms, size=(rows, size)) + atoms * np.arange(rows)[:, None]
    return np.bincount(picks.ravel(), minlength=rows * atoms).reshape(rows, atoms).astype(np.float64)


def _rounded(size: int) -> int:
    """A window's size to three significant digits: windows within 1% of each other share a null."""
    digits = max(0, len(str(size)) - 3)
    return round(size, -digits) if digits else size
