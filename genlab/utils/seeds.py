"""Seeds derived from a run's seed and a position (rank, epoch, batch...): the same position, the same seed."""

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from `parts` (Python's hash() of str differs between processes)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1
