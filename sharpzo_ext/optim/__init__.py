"""Forward-only optimizers: torch.optim.Optimizer subclasses driven by a loss objective.

    opt.step(closure)                       # closure() -> loss; the parameters are perturbed
    opt.step(sz.optim.Population(fn))       # fn(X) -> one loss per row of X, one call

Each counts its objective evaluations in ``forward_passes``, keeps its randomness in its seed
(the perturbation stream), keeps every hyperparameter in ``param_groups``, resumes bit for bit
from ``state_dict()``, and leaves the parameters bitwise unchanged when a step fails.

The algorithms themselves are functions over the flat parameter vector, which the classes wrap.
Modules, by job:

    zosgd.py, sparse_zo.py, cmaes.py, sharpzo.py   the torch.optim classes (thin)
    spsa.py         SPSA as ZIP and BlackVIP run it (gains, clipping, gradient correction)
    two_point.py    two-point estimates (ZOSGD, mask scores, SharpZO's sharpness)
    sparse.py       masked, normalized steps (SparseZO, SharpZO's stage 2)
    cma.py          CMA-ES over a state dict (CMAES, SharpZO's stage 1), with
                    cma_constants.py (pycma's constants) and cma_factors.py (factors of C)
    objective.py    the two objective kinds, and evaluating points
    flat.py         the parameters as one flat vector
    base.py         seed, counters, hyperparameters in param_groups, state dicts
    streams.py      which stream each random quantity uses
    legacy.py       state dicts of sharpzo_ext 0.1.0
"""

from sharpzo_ext.optim.cmaes import CMAES
from sharpzo_ext.optim.objective import Population
from sharpzo_ext.optim.sharpzo import SharpZO
from sharpzo_ext.optim.sparse_zo import SparseZO
from sharpzo_ext.optim.spsa import SPSA
from sharpzo_ext.optim.zosgd import ZOSGD

__all__ = ["CMAES", "Population", "SPSA", "SharpZO", "SparseZO", "ZOSGD"]
