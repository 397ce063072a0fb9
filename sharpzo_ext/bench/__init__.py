"""Microbenchmarks on torch.utils.benchmark, run by `python -m sharpzo_ext bench`.

Each suite module defines `run(config) -> Suite`; ratios are measured in one run, because this
kind of machine is shared and noisy and only ratios are comparable between runs.
"""

from sharpzo_ext.bench.common import BenchConfig, Suite, run_suites

SUITES = ("perturb", "sparse_zscore", "cmaes", "clip", "distributed", "memory", "backends",
          "clip-realsize", "adapter-realsize")
# memory (a few minutes), backends (about 15), clip-realsize (about 17) and adapter-realsize
# (about 2) run real sizes: asked for by name
DEFAULT_SUITES = SUITES[:-4]

__all__ = ["BenchConfig", "Suite", "run_suites", "SUITES", "DEFAULT_SUITES"]
