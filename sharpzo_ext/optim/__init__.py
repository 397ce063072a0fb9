"""Forward-only optimizers: torch.optim.Optimizer subclasses driven by a loss closure.

Each counts its loss evaluations in ``forward_passes``, keeps its randomness in its seed (the
perturbation stream), resumes bit for bit from ``state_dict()``, and leaves the parameters
bitwise unchanged when the closure raises.
"""

from sharpzo_ext.optim.cmaes import CMAES
from sharpzo_ext.optim.sharpzo import SharpZO
from sharpzo_ext.optim.sparse_zo import SparseZO
from sharpzo_ext.optim.zosgd import ZOSGD

__all__ = ["CMAES", "SharpZO", "SparseZO", "ZOSGD"]
