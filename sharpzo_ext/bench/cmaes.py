"""CMAES against pycma: time per generation (ask + tell, no fitness) and evaluations to 1e-8.

pycma (a bench/test extra, never a runtime dependency) runs with CSA step-size control forced,
since pycma >= 4.5 switches to TPA for d >= 300 (docs/algorithms.md). Generation times
are measured over enough generations to include the lazy decompositions at their amortized cost.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from torch.utils.benchmark import Timer

import sharpzo_ext as sz
from sharpzo_ext.bench.common import BenchConfig, Suite, Target, markdown_table
from sharpzo_ext.optim.cma_constants import CMAConstants


def _pycma():
    try:
        import cma  # noqa: PLC0415
    except ImportError:
        return None
    return cma


def _pycma_options(cma, seed, popsize=None):
    opts = {"seed": seed + 1, "verbose": -9, "AdaptSigma": cma.sigma_adaptation.CMAAdaptSigmaCSA,
            "tolfun": 0, "tolx": 0, "tolflatfitness": 10**9}
    if popsize:
        opts["popsize"] = popsize
    return opts


def _ms_per_generation(generation, n, popsize, config: BenchConfig) -> float:
    """Mean milliseconds per generation over runs of ceil(3 lazy gaps) generations each, so that
    every measured run pays for its decompositions (a median over single generations would
    leave them out)."""
    per_run = max(1, math.ceil(3 * CMAConstants.pycma(n, popsize).lazy_gap))

    def generations():
        for _ in range(per_run):
            generation()

    generations()  # warm-up
    timer = Timer(stmt="generations()", globals={"generations": generations},
                  num_threads=torch.get_num_threads())
    median = timer.blocked_autorange(min_run_time=config.effective_min_run_time).median
    return median / per_run * 1e3


def generation_times(config: BenchConfig):
    cma = _pycma()
    cases = [(512, 40), (2048, None)] if not config.quick else [(128, 20)]
    rows, records, targets = [], [], []
    for n, popsize in cases:
        lam = CMAConstants.pycma(n, popsize).popsize
        gen = torch.Generator().manual_seed(0)
        results = {}
        for label, kwargs in [("sharpzo_ext (cholesky)", {}),
                              ("sharpzo_ext (eigh, as pycma)", {"decomposition": "eigh"}),
                              ("sharpzo_ext (diagonal)", {"diagonal": True})]:
            p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64, device=config.device))
            opt = sz.optim.CMAES([p], sigma=0.4, popsize=popsize, seed=0, **kwargs)

            def generation(opt=opt):
                X = opt.ask()
                opt.tell(X, torch.rand(lam, generator=gen))

            results[label] = _ms_per_generation(generation, n, popsize, config)
        if cma is not None:
            es = cma.CMAEvolutionStrategy(np.zeros(n), 0.4, _pycma_options(cma, 0, lam))
            rng = np.random.default_rng(0)

            def pycma_generation():
                X = es.ask()
                es.tell(X, rng.random(lam).tolist())

            results["pycma 4.5 (CSA)"] = _ms_per_generation(pycma_generation, n, popsize, config)
        records += [{"d": n, "popsize": lam, "method": m, "ms_per_generation": t}
                    for m, t in results.items()]
        ours = results["sharpzo_ext (cholesky)"]
        pycma_ms = results.get("pycma 4.5 (CSA)")
        rows.append([n, lam, *(f"{results[m]:.2f}" for m in list(results)[:3]),
                     f"{pycma_ms:.2f}" if pycma_ms else "n/a",
                     f"{pycma_ms / ours:.1f}x" if pycma_ms else "n/a"])
        if pycma_ms and not config.quick:
            targets.append(Target(f"CMAES generation d={n} lambda={lam} vs pycma",
                                  pycma_ms / ours, ">= 3"))
    header = ["d", "lambda", "cholesky ms", "eigh ms", "diagonal ms", "pycma ms", "vs pycma"]
    return markdown_table(header, rows), records, targets


def sphere(X):
    return (X * X).sum(-1)


def ellipsoid(X):
    n = X.shape[-1]
    return (1e6 ** (torch.arange(n, dtype=X.dtype) / (n - 1)) * X * X).sum(-1)


def _evaluations_ours(f, n, seed, target=1e-8, budget=10**6):
    x0 = torch.tensor(np.random.default_rng(seed).uniform(-3, 3, n))
    opt = sz.optim.CMAES([torch.nn.Parameter(x0)], sigma=2.0, seed=seed)
    while opt.best[1] >= target and opt.forward_passes < budget:
        opt.step(sz.optim.Population(f))
    return opt.forward_passes


def _evaluations_pycma(cma, f, n, seed, target=1e-8, budget=10**6):
    es = cma.CMAEvolutionStrategy(np.random.default_rng(seed).uniform(-3, 3, n), 2.0,
                                  _pycma_options(cma, seed))
    evaluations, best = 0, math.inf
    while best >= target and evaluations < budget:
        X = es.ask()
        losses = f(torch.tensor(np.array(X))).numpy()
        evaluations += len(X)
        best = min(best, float(losses.min()))
        es.tell(X, losses.tolist())
    return evaluations


def convergence(config: BenchConfig):
    cma = _pycma()
    seeds = range(3 if config.quick else 15)
    problems = [("sphere", sphere, 10), ("ellipsoid", ellipsoid, 10), ("sphere", sphere, 40)]
    if not config.quick:
        problems.append(("ellipsoid", ellipsoid, 40))
    rows, records, targets = [], [], []
    for name, f, n in problems:
        ours = [_evaluations_ours(f, n, s) for s in seeds]
        theirs = [_evaluations_pycma(cma, f, n, s) for s in seeds] if cma else None
        m_ours = statistics.median(ours)
        m_theirs = statistics.median(theirs) if theirs else None
        records.append({"problem": f"{n}-D {name}", "seeds": len(seeds), "sharpzo_ext": ours,
                        "pycma": theirs})
        ratio = m_ours / m_theirs if m_theirs else None
        rows.append([f"{n}-D {name}", len(seeds), f"{m_ours:.0f} [{min(ours)}-{max(ours)}]",
                     f"{m_theirs:.0f} [{min(theirs)}-{max(theirs)}]" if theirs else "n/a",
                     f"{ratio:.2f}" if ratio else "n/a"])
        if ratio:
            targets.append(Target(f"evaluations to 1e-8, {n}-D {name}: |median / pycma median - 1|",
                                  abs(ratio - 1), "<= 0.15", ""))
    header = ["problem", "seeds", "sharpzo_ext median [min-max]", "pycma median [min-max]",
              "ratio"]
    return markdown_table(header, rows), records, targets


def run(config: BenchConfig) -> Suite:
    if config.device != "cpu":
        print("note: pycma runs on the CPU; CMAES runs on", config.device)
    table1, records1, targets1 = generation_times(config)
    table2, records2, targets2 = convergence(config)
    return Suite("cmaes", table1 + "\n\nEvaluations until the best loss is below 1e-8 "
                 "(x0 ~ U[-3, 3]^d, sigma0 = 2, default lambda, ellipsoid condition 1e6):\n\n"
                 + table2, records1 + records2, targets1 + targets2)
