"""How CMAES draws samples from N(0, C) and whitens vectors, for the three covariance models.

Note [Cholesky factor by default]
pycma decomposes C = B D^2 B^T (eigh) every 1 / (10 n (c1 + cmu)) generations and uses B D to
sample and B D^-1 B^T to whiten (the path ps and the active weights). At n = 512 that eigh costs
23 ms (float64, this machine) every 2.4 generations: 80% of pycma's time per generation. Any
factor A with A A^T = C samples the same distribution, and whitening by A^-1 gives the same
norms; only the frame of ps turns with C. The Cholesky factor costs ~7x less than eigh and its
frame moves continuously with C, as in the Cholesky-CMA-ES of Krause, Arbones and Igel (NeurIPS
2016), so "cholesky" is the default, decomposed lazily at pycma's interval; "eigh" reproduces
pycma exactly, and "diagonal" is the separable model (sep-CMA-ES, O(n) per generation).
"""

from __future__ import annotations

import torch

KINDS = ("cholesky", "eigh", "diagonal")


def _repaired(C: torch.Tensor) -> torch.Tensor:
    """C with eigenvalues lifted to at least max * 1e-14 (after active updates or round-off
    left it slightly indefinite), as pycma does on a failed decomposition."""
    values, vectors = torch.linalg.eigh((C + C.T) / 2)
    floor = values.max().clamp_min(1e-300) * 1e-14
    return (vectors * values.clamp_min(floor)) @ vectors.T


def decompose(kind: str, C: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
    """(factor, repaired C or None) of the covariance C (a matrix, or a vector if diagonal)."""
    if kind == "diagonal":
        if bool((C <= 0).any()):
            C = C.clamp_min(C.max().clamp_min(1e-300) * 1e-14)
            return {"std": C.sqrt()}, C
        return {"std": C.sqrt()}, None
    repaired = None
    for attempt in range(2):
        if kind == "cholesky":
            L, info = torch.linalg.cholesky_ex(C)
            if int(info) == 0:
                return {"L": L}, repaired
        else:
            values, vectors = torch.linalg.eigh(C)
            if bool(values.min() > 0):
                return {"B": vectors, "D": values.sqrt()}, repaired
        if attempt == 0:
            repaired = C = _repaired(C)
    raise RuntimeError("CMAES: the covariance matrix cannot be decomposed even after repair")


def sample(factor: dict, Z: torch.Tensor) -> torch.Tensor:
    """Rows y = A z for rows z of Z, with A A^T = C."""
    if "std" in factor:
        return Z * factor["std"]
    if "L" in factor:
        return Z @ factor["L"].T
    return (Z * factor["D"]) @ factor["B"].T


def whiten_samples(factor: dict, Z: torch.Tensor) -> torch.Tensor:
    """whiten(sample(factor, Z)) without solving: Z itself, turned back from the eigenbasis
    for eigh (whose whitening is the symmetric C^-1/2 = B D^-1 B^T)."""
    return Z @ factor["B"].T if "B" in factor else Z


def transpose_apply(factor: dict, r: torch.Tensor) -> torch.Tensor:
    """A^T r for a vector r."""
    if "std" in factor:
        return factor["std"] * r
    if "L" in factor:
        return factor["L"].T @ r
    return factor["D"] * (factor["B"].T @ r)


def whiten(factor: dict, Y: torch.Tensor) -> torch.Tensor:
    """Rows A^-1 y for rows y of Y (for eigh, the symmetric C^-1/2 y)."""
    if "std" in factor:
        return Y / factor["std"]
    if "L" in factor:
        return torch.linalg.solve_triangular(factor["L"], Y.T, upper=False).T
    return ((Y @ factor["B"]) / factor["D"]) @ factor["B"].T


def condition(factor: dict) -> float:
    """The condition number of C (for cholesky, the lower bound (max L_ii / min L_ii)^2)."""
    if "std" in factor:
        s = factor["std"]
    elif "L" in factor:
        s = factor["L"].diagonal()
    else:
        s = factor["D"]
    return float((s.max() / s.min()) ** 2)
