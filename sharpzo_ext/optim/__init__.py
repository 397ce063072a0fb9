"""Forward-only optimizers: torch.optim.Optimizer subclasses driven by a loss objective.

    opt.step(closure)                       # closure() -> loss; the parameters are perturbed
    opt.step(sz.optim.Population(fn))       # fn(X) -> one loss per row of X, one call

Each counts its objective evaluations in ``forward_passes``, keeps its randomness in its seed
(the perturbation stream), keeps every hyperparameter in ``param_groups``, resumes bit for bit
from ``state_dict()``, and leaves the parameters bitwise unchanged when a step fails.

The algorithms themselves are functions over the flat parameter vector, which the classes wrap:
``two_point`` (two-point estimates), ``sparse`` (masked, normalized search) and ``cma``
(CMA-ES); ``objective`` evaluates points, ``flat`` views the parameters as one vector.
"""

from sharpzo_ext.optim.cmaes import CMAES
from sharpzo_ext.optim.objective import Population
from sharpzo_ext.optim.sharpzo import SharpZO
from sharpzo_ext.optim.sparse_zo import SparseZO
from sharpzo_ext.optim.zosgd import ZOSGD

__all__ = ["CMAES", "Population", "SharpZO", "SparseZO", "ZOSGD"]
