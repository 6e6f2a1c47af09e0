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
  reference's size is its number of values). Categories are drawn as the reference was made:
  from its frequencies and the categories it did not see (`Unseen`), a category being listed
  only if the drawn reference has it, the window's draws of any other going to the unseen bin.
  With many rare categories, a window holds some the reference never saw; a null without them
  took that for drift (Zipf-distributed categories, 1,000 of them, 10,000 reference rows and
  windows of 1,000: the Jensen-Shannon test flagged 65 of 100 features at p < 0.05);
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
from collections.abc import Callable, Sequence
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
# Draws of the Wasserstein and categorical nulls computed at once (rows of work arrays of MAX_ATOMS
# values, or of the categories).
_CHUNK: Final = 250
# The categorical nulls' bias correction: references drawn one level down, and the draws of the null
# of each (it reads only their median).
_LOWER_REFERENCES: Final = 4
_LOWER_RESAMPLES: Final = 250

# Categories the reference did not see, at most, that a categorical null draws from (see `Unseen`).
MAX_UNSEEN_CATEGORIES: Final = 1000

Distance = Callable[[Tensor, Tensor], Tensor]
Key = tuple[str, int, int, int]


@dataclass(frozen=True)
class Unseen:
    """What a reference that lists every category it saw says of those it did not: their share of the
    population (Good-Turing: the share of the reference's values seen once) and their number (Chao1,
    bias-corrected: from the categories seen once and twice). Nothing when its list is cut short:
    the rarest categories are then counted together, unlisted, and those counts say nothing more."""

    share: float = 0.0
    categories: int = 0

    @classmethod
    def of(cls, counts: npt.NDArray[np.float64], complete: bool) -> Unseen:
        """From the listed categories' counts; `complete`: the list holds every category seen."""
        total = float(counts.sum())
        once, twice = int(np.sum(counts == 1)), int(np.sum(counts == 2))
        if not complete or total <= 0 or once == 0:
            return cls()
        expected = (total - 1) / total * once * (once - 1) / (2 * (twice + 1))
        return cls(once / total, min(MAX_UNSEEN_CATEGORIES, max(1, math.ceil(expected))))


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
        unseen: Sequence[Unseen] | None = None,
    ) -> Tensor:
        """p-values of a distance between frequencies per bin (features, bins), NaN-padded bins ignored.

        `squared`: fit the null of the distance squared (a divergence) and read the observed one squared.
        `unseen`: the bins are categories, the unseen bin last, and this is what each feature's
        reference says of the categories it did not see (see `_draw_categories`).
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
            draw = (
                functools.partial(self._draw_binned, key, bins, distance, squared)
                if unseen is None
                else functools.partial(self._draw_categories, key, bins, unseen[position], distance, squared)
            )
            fit = self._fit(key, draw)
            p_values[position] = fit.sf(value * value if squared else value)
        return p_values

    def _draw_binned(self, key: Key, bins: npt.NDArray[np.float64], distance: Distance, squared: bool) -> Tensor:
        rng = self._rng(key)
        bins = bins / bins.sum() if bins.sum() > 0 else bins
        reference = rng.multinomial(key[2], bins, size=self.resamples).astype(np.float64)
        current = rng.multinomial(key[3], bins, size=self.resamples).astype(np.float64)
        return _distances(reference, current, distance, squared)

    def _draw_categories(
        self, key: Key, bins: npt.NDArray[np.float64], unseen: Unseen, distance: Distance, squared: bool
    ) -> Tensor:
        """Draws of a reference and a window from the reference's categories and the ones it did not see.

        `bins`: the listed categories' frequencies, then the unseen bin's (the unlisted categories').
        The population drawn from is an estimate fitted to the one reference there is: with many
        rare categories, its draws lie closer together than the population's own would (the plug-in
        bias of a bootstrap). They are moved by as much as the same estimate moves them one level
        down: fitted to references drawn from it, against it (the bootstrap's bias correction).
        """
        rng = self._rng(key)
        big, small = key[2], key[3]
        population = _population(bins, unseen)
        draws = _category_draws(rng, population, len(bins) - 1, (big, small), self.resamples, distance, squared)
        lower = [
            np.median(_lower_draws(rng, population, len(bins) - 1, (big, small), distance, squared))
            for _ in range(_LOWER_REFERENCES)
        ]
        return torch.from_numpy(draws + (np.median(draws) - np.mean(lower)))

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


def _population(bins: npt.NDArray[np.float64], unseen: Unseen) -> npt.NDArray[np.float64]:
    """The categories' frequencies shrunk to make room for the unseen ones', which follow them, equally frequent."""
    hidden = np.full(unseen.categories, unseen.share / max(1, unseen.categories))
    population = np.concatenate([bins * (1 - unseen.share), hidden])
    return population / population.sum()  # type: ignore[no-any-return]


def _lower_draws(
    rng: np.random.Generator,
    population: npt.NDArray[np.float64],
    pooled: int,
    sizes: tuple[int, int],
    distance: Distance,
    squared: bool,
) -> npt.NDArray[np.float64]:
    """Draws of the null of a reference drawn from `population`, estimated as the reference's own is."""
    sample = rng.multinomial(sizes[0], population).astype(np.float64)
    seen = sample > 0
    seen[pooled] = False
    listed = sample[seen]
    again = _population(np.append(listed, sample[pooled]) / sizes[0], Unseen.of(listed, complete=sample[pooled] == 0))
    return _category_draws(rng, again, len(listed), sizes, _LOWER_RESAMPLES, distance, squared)


def _category_draws(
    rng: np.random.Generator,
    population: npt.NDArray[np.float64],
    pooled: int,
    sizes: tuple[int, int],
    resamples: int,
    distance: Distance,
    squared: bool,
) -> npt.NDArray[np.float64]:
    """`resamples` distances between a reference and a window of `sizes` drawn from `population`.

    A category the drawn reference lacks would not be listed: the window's draws of it count in
    the unseen bin, the column `pooled`, which stays what it is whatever the reference drew of it.
    """
    draws = []
    for start in range(0, resamples, _CHUNK):
        rows = min(_CHUNK, resamples - start)
        reference = rng.multinomial(sizes[0], population, size=rows).astype(np.float64)
        current = rng.multinomial(sizes[1], population, size=rows).astype(np.float64)
        absent = reference == 0
        absent[:, pooled] = False
        current[:, pooled] += np.where(absent, current, 0.0).sum(axis=1)
        current[absent] = 0.0
        draws.append(_distances(reference, current, distance, squared).numpy())
    return np.concatenate(draws)


def _distances(
    reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64], distance: Distance, squared: bool
) -> Tensor:
    """The distance between each row of drawn counts of the reference and of the window (squared: its square)."""
    draws = distance(
        torch.from_numpy(reference / reference.sum(axis=1, keepdims=True)),
        torch.from_numpy(current / current.sum(axis=1, keepdims=True)),
    )
    return draws * draws if squared else draws


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
