"""Shuffled row numbers computed on the fly: a seeded permutation of ``range(n)`` that holds
no per-row array, so splitting and shuffling ten million rows costs a few integers, not
80 MB of ``randperm``.

:class:`Permutation` is a bijection of ``{0, ..., n-1}`` given by a Feistel network on
``k``-bit integers (``2^k`` the smallest power of two ``>= n``, ``k >= 2``) and *cycle
walking*: a value the network sends to ``>= n`` is sent through it again until it lands
below ``n``. The network is a bijection of ``{0, ..., 2^k - 1}``, so cycle walking restricts
it to a bijection of ``{0, ..., n-1}`` (each value walks along its own cycle and stops at the
first member of the cycle below ``n``); since ``2^k < 2n``, a value walks fewer than two
steps on average. Each round splits a value into its high ``a`` and low ``b`` bits
``(L, R)`` and maps it to ``(R, L xor F_i(R) mod 2^a)``, ``F_i`` a 64-bit mixing function keyed
by the seed (SplitMix64's finalizer), so the inverse is as cheap as the permutation itself.
It is a pseudo-random permutation: as a shuffle for training, it leaves no trace of the
rows' order (the tests measure it); it is not uniform over all ``n!`` orders (no seeded
shuffle of a large ``n`` is).

:class:`Segment` is a contiguous run of a permutation's positions (one part of a shuffled
``range(n)`` cut into parts, :func:`split`); it answers both "which item is at position
``p``" and "at which position, if any, is item ``i``", the latter for reading a part of a
file in file order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
#: Feistel rounds: four make a strong pseudo-random permutation (Luby-Rackoff); six for margin.
ROUNDS = 6
#: Values permuted at a time (a larger request is done in pieces of this size).
CHUNK = 65536


def _splitmix64(state: int) -> tuple[int, int]:
    """The next state and output of SplitMix64 (Python integers, 64 bits)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _mix(values: np.ndarray, key: np.uint64, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer of ``values xor key`` (uint64, wrapping), written into ``out``
    (in place: ten million values take 40 ms, not 200)."""
    z = np.bitwise_xor(values, key, out=out)
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z ^= np.right_shift(z, np.uint64(shift), out=scratch)
        z *= np.uint64(multiplier)
    z ^= np.right_shift(z, np.uint64(31), out=scratch)
    return z


class Permutation:
    """A seeded bijection ``p`` of ``{0, ..., n-1}``, computed on the fly (see the module
    docstring): ``p(positions)`` gives the items at those positions of the shuffled
    ``range(n)``, ``p.inverse(items)`` the positions of those items. Memory is O(1) in ``n``
    and O(len(positions)) per call; the same ``(n, seed)`` gives the same permutation on any
    machine."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"a permutation of range({n}) needs n >= 1")
        if n > 1 << 62:
            raise ValueError(f"a permutation of range({n}) is beyond 2^62 items")
        self.n, self.seed = int(n), int(seed)
        bits = max(2, (self.n - 1).bit_length())
        self._high, self._low = bits // 2, bits - bits // 2  # (a, b) of the first round
        state, keys = self.seed & _MASK64, []
        for _ in range(ROUNDS):
            state, key = _splitmix64(state)
            keys.append(np.uint64(key))
        self._keys = keys

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Permutation(n={self.n}, seed={self.seed})"

    def __call__(self, positions: Tensor) -> Tensor:
        """The items (int64) at ``positions`` (integers in ``0..n-1``, any shape)."""
        return self._walk(positions, self._network)

    def inverse(self, items: Tensor) -> Tensor:
        """The positions (int64) of ``items`` (integers in ``0..n-1``, any shape):
        ``p.inverse(p(i)) == i``."""
        return self._walk(items, self._network_inverse)

    def _walk(self, values: Tensor, network: Callable[[np.ndarray], np.ndarray]) -> Tensor:
        """Cycle walking: apply ``network`` until every value is below ``n``."""
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"positions must be integers, got {values.dtype}")
        flat = values.detach().to("cpu", torch.int64).reshape(-1)
        if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= self.n):
            raise IndexError(f"positions must lie in 0..{self.n - 1}")
        result = flat.numpy().astype(np.uint64)
        for start in range(0, len(result), CHUNK):  # cache-sized pieces: fast, few temporaries
            piece = result[start : start + CHUNK]
            piece[:] = network(piece.copy())
            pending = np.flatnonzero(piece >= self.n)
            while len(pending):
                piece[pending] = network(piece[pending])
                pending = pending[piece[pending] >= self.n]
        return torch.from_numpy(result.view(np.int64)).reshape(values.shape).to(values.device)

    def _network(self, x: np.ndarray) -> np.ndarray:
        """The Feistel network on ``k``-bit values (``x`` is overwritten): round ``i`` maps
        ``(L, R)`` (``a`` high bits, ``b`` low bits) to ``(R, L xor F_i(R))`` (``b`` high bits,
        ``a`` low bits)."""
        right, mixed, scratch = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        high, low = self._high, self._low
        for key in self._keys:
            np.bitwise_and(x, np.uint64((1 << low) - 1), out=right)
            x >>= np.uint64(low)  # L
            x ^= np.bitwise_and(_mix(right, key, mixed, scratch), np.uint64((1 << high) - 1), out=mixed)
            x |= np.left_shift(right, np.uint64(high), out=right)
            high, low = low, high
        return x

    def _network_inverse(self, x: np.ndarray) -> np.ndarray:
        """The rounds of :meth:`_network` undone, last first (``x`` is overwritten)."""
        right, mixed, scratch = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        sizes = [(self._high, self._low) if i % 2 == 0 else (self._low, self._high) for i in range(ROUNDS)]
        for key, (high, low) in zip(reversed(self._keys), reversed(sizes), strict=True):
            np.right_shift(x, np.uint64(high), out=right)  # R
            x &= np.uint64((1 << high) - 1)  # L xor F(R)
            x ^= np.bitwise_and(_mix(right, key, mixed, scratch), np.uint64((1 << high) - 1), out=mixed)  # L
            x <<= np.uint64(low)
            x |= right
        return x


@dataclass(frozen=True)
class Segment:
    """Positions ``start, ..., stop-1`` of a permutation ``p``: the items ``p(start), ...,
    p(stop-1)``, in that order (one part of a shuffled ``range(n)``; see :func:`split`)."""

    permutation: Permutation
    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop <= len(self.permutation):
            raise ValueError(f"positions {self.start}..{self.stop} are not within range({len(self.permutation)})")

    def __len__(self) -> int:
        return self.stop - self.start

    def items(self, positions: Tensor | None = None) -> Tensor:
        """The items at ``positions`` of this segment (default: all of them, in order)."""
        if positions is None:
            positions = torch.arange(len(self))
        elif positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= len(self)):
            raise IndexError(f"positions must lie in 0..{len(self) - 1}")
        return self.permutation(self.start + positions)

    def positions_of(self, items: Tensor) -> Tensor:
        """Where each of ``items`` (in ``0..n-1``) lies in this segment; ``-1`` where it is in
        another part."""
        position = self.permutation.inverse(items) - self.start
        return torch.where((position >= 0) & (position < len(self)), position, -1)


def split(n: int, fractions: tuple[float, ...], seed: int) -> list[Segment]:
    """``range(n)`` shuffled with ``seed`` and cut into consecutive parts of the given
    fractions: part ``j`` holds ``int(fractions[j] * n)`` items, the last part the rest. The
    parts are disjoint and together hold every item once."""
    permutation = Permutation(n, seed)
    sizes = [int(f * n) for f in fractions[:-1]]
    if any(size < 0 for size in sizes) or sum(sizes) > n:
        raise ValueError(f"fractions {fractions} do not cut {n} items into parts")
    bounds = np.cumsum([0, *sizes, n - sum(sizes)]).tolist()
    return [Segment(permutation, start, stop) for start, stop in itertools.pairwise(bounds)]
