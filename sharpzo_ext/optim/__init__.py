"""Forward-only optimizers: torch.optim.Optimizer subclasses driven by a loss closure."""

from sharpzo_ext.optim.cmaes import CMAES

__all__ = ["CMAES"]
