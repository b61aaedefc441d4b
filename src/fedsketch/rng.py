"""Named random streams derived from one root seed.

Every random choice in a run (partition, client profiles, per-round sampling, per-client
sketches and mini-batches) draws from its own stream, keyed by a name and integers such as
``(round, client)``. Keys, not call order, define a stream, so the numbers a client sees do not
depend on which other clients ran, failed, or whether the run was resumed. Library code never
touches the global numpy/torch generators.
"""

from __future__ import annotations

import zlib

import numpy as np


class Streams:
    """Factory of independent ``numpy.random.Generator`` objects keyed by name and integers.

    Parameters
    ----------
    seed : int
        Root seed of the run (``seed`` in the config).

    Examples
    --------
    >>> s = Streams(0)
    >>> a = s.generator("sampling", 3).random()
    >>> b = Streams(0).generator("sampling", 3).random()
    >>> a == b
    True
    """

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed

    def _sequence(self, name: str, keys: tuple[int, ...]) -> np.random.SeedSequence:
        tag = zlib.crc32(name.encode("utf-8"))
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(tag, *map(int, keys)))

    def generator(self, name: str, *keys: int) -> np.random.Generator:
        """Return the generator of stream ``name`` at ``keys`` (a fresh object each call)."""
        return np.random.default_rng(self._sequence(name, keys))

    def integer_seed(self, name: str, *keys: int) -> int:
        """A 63-bit integer seed for libraries that take one (e.g. ``torch.Generator``)."""
        return int(self._sequence(name, keys).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)
