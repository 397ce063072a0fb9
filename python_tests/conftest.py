import os

from hypothesis import HealthCheck, settings

import sharpzo_ext  # noqa: F401  (registers torch.ops.sharpzo)

# Note [Fuzzing profiles]
# The property-based tests (test_fuzz_*.py) run derandomized under `make test`: the same
# examples every time, so CI is deterministic and a failure reproduces. Set
# HYPOTHESIS_PROFILE=explore to draw new examples (and more of them) on every run.
settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
