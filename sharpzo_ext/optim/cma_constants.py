"""CMA-ES strategy parameters: pycma's CSA defaults (docs/algorithms.md, "Constants")."""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["CMAConstants"]


@dataclasses.dataclass(frozen=True)
class CMAConstants:
    n: int
    popsize: int
    mu: int
    weights: tuple[float, ...]  # lambda recombination weights: mu positive (sum 1), then negative
    mueff: float
    mueff_neg: float
    cc: float
    cs: float
    damps: float
    c1: float
    cmu: float
    chi_n: float
    lazy_gap: float  # generations between decompositions of C (pycma: 1 / (10 n (c1 + cmu)))

    @classmethod
    def pycma(cls, n: int, popsize: int | None = None, active: bool = True,
              diagonal: bool = False) -> "CMAConstants":
        """pycma 4.5's defaults with CSA step-size control for dimension n.

        diagonal: the separable variant's learning rates (pycma's CMA_diagonal: c1_sep,
        cmu_sep, cc_sep), which are (n + 2) / 3 times larger, about, for a diagonal C.
        """
        if n < 1:
            raise ValueError(f"the dimension must be >= 1, got {n}")
        lam = 4 + int(3 * math.log(n)) if popsize is None else int(popsize)
        if lam < 2:
            raise ValueError(f"popsize must be >= 2, got {lam}")
        mu = lam // 2
        raw = [math.log((lam + 1) / 2) - math.log(i) for i in range(1, lam + 1)]
        pos, neg = raw[:mu], raw[mu:]
        mueff = sum(pos) ** 2 / sum(w * w for w in pos)
        mueff_neg = sum(neg) ** 2 / sum(w * w for w in neg) if neg and sum(neg) != 0 else 0.0
        cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        cs = min(0.5, (mueff + 2) / (n + mueff + 3))
        kappa = max(1.0, 3 * (1 - 0.5 ** (n / 9)))
        damps = 1 + 2 * max(0.0, kappa * math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
        c1 = min(1.0, lam / 6) * 2 / ((n + 1.3) ** 2 + mueff)
        cmu = min(1 - c1, 2 * (0.25 + mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
        sum_pos = sum(pos)
        weights = [w / sum_pos for w in pos]
        if active and neg and sum(neg) != 0:
            scale = min(1 + c1 / cmu, 1 + 2 * mueff_neg / (mueff + 2),
                        (1 - c1 - cmu) / (n * cmu)) / abs(sum(neg))
            weights += [w * scale for w in neg]
        else:
            weights += [0.0] * len(neg)
        if diagonal:  # the weights above keep the full model's c1 and cmu, as in pycma
            c1 = 1 / (n + 2 * math.sqrt(n) + mueff / n)
            cmu = min(1 - c1, (0.25 + mueff + 1 / mueff - 2) / (n + 4 * math.sqrt(n) + mueff / 2))
            cc = (1 + 1 / n + mueff / n) / (math.sqrt(n) + 1 / n + 2 * mueff / n)
        chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
        lazy_gap = 1 / (10 * n * (c1 + cmu))
        return cls(n, lam, mu, tuple(weights), mueff, mueff_neg, cc, cs, damps, c1, cmu, chi_n,
                   lazy_gap)

    def weights_tensor(self, device=None) -> torch.Tensor:
        return torch.tensor(self.weights, dtype=torch.float64, device=device)
