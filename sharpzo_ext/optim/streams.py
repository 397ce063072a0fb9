"""Which stream of the perturbation stream each random quantity of the optimizers uses.

All randomness of an optimizer is keyed by its seed and drawn from sharpzo_ext.ops.sample /
perturb_ on a stream that names its purpose and its counter (generation, step, query), so that
two optimizers never share random numbers unless they share a seed, and a run resumed from a
state_dict draws exactly the numbers it would have drawn.
"""

from __future__ import annotations

_PURPOSE_BITS = 8
_COUNTER_BITS = 63 - _PURPOSE_BITS

CMA_SAMPLES = 1        # CMA-ES populations: counter = (restart, generation)
ZO_DIRECTIONS = 2      # zeroth-order directions: counter = (step, query)
MASK_DIRECTIONS = 3    # directions of the gradient estimate behind a SparseZO mask refresh
SHARPNESS = 4          # directions of SharpZO's sharpness (RGE) estimate
RANDOM_MASK = 5        # SparseZO's random masks
SPSA_DIRECTIONS = 6    # SPSA's segmented-uniform directions: counter = (step, 2 query + part)


def stream_id(purpose: int, major: int, minor: int = 0, minor_bits: int = 24) -> int:
    """The stream for `purpose` and the counter pair (major, minor), as an int in [0, 2^63)."""
    if not 0 <= minor < 1 << minor_bits or not 0 <= major < 1 << (_COUNTER_BITS - minor_bits):
        raise OverflowError(f"stream counter ({major}, {minor}) out of range")
    return (purpose << _COUNTER_BITS) | (major << minor_bits) | minor
