"""Closed-form heads: classifiers fitted to the cached few-shot image features, with no
optimization loop through the model.

    head = heads.fit("gda", features, labels, classes)     # features (N, E), L2-normalized
    head.logits(test_features)                              # (M, C)

- ``gda``: Gaussian discriminant analysis (Note [GDA]): one Gaussian per class with a shared,
  shrunk covariance, which is a linear classifier in closed form.
- ``tip-adapter``: Tip-Adapter without training: a cache of the few-shot features whose
  affinities to an image vote for their labels (Note [Tip-Adapter's cache]).
- ``linear-probe``: multinomial logistic regression on the features (L-BFGS, first order on the
  features only; Note [Linear probe]), the first-order reference for a head.

A head's logits are scaled by a temperature (``Head.temperature``, 1 when fitted; ensemble.py
calibrates it) so that different heads are ensembled with the prompt's text logits on one
scale. ``cross_fitted`` scores every training image with a head fitted without it, which is
what a prompt tuned for the head is trained against (Note [Cross-fitted head logits]).

Note [GDA]
With p(x | c) = N(mu_c, Sigma) and a uniform class prior, Bayes' rule gives the linear
classifier logit_c(x) = x^T Sigma^-1 mu_c - mu_c^T Sigma^-1 mu_c / 2. The means are the class
means of the features. Sigma is the pooled within-class covariance S (the features less their
class means, divided by N), shrunk toward a multiple of the identity:
Sigma = (1 - s) S + s tr(S) / E I, with the Ledoit-Wolf intensity s estimated from the same
centered features. Shrinkage is what makes the estimate invertible when the feature width E
(512 for ViT-B/16) exceeds the number of images (160 at 16 shots x 10 classes). At one shot per
class S is zero: s = 1 and Sigma is the identity (times the features' total variance, which
leaves the argmax unchanged), and GDA is the nearest-class-mean rule. Computed in float64.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from sharpzo_ext import loaded

__all__ = ["HEADS", "FOLDS", "Head", "HeadError", "fit", "folds", "cross_fitted",
           "ledoit_wolf_shrinkage", "calibrate"]

HEADS = ("gda", "tip-adapter", "linear-probe")
FOLDS = 4  # Note [Cross-fitted head logits]
TEMPERATURES = (1e-6, 1e6)  # the range calibrate searches, and a loaded head's must lie in
# Note [Loaded values are checked]: what a loaded head's values may be. Fitted weights and biases
# are far smaller (GDA's are Sigma^-1 mu with Sigma shrunk toward a multiple of the identity);
# 1e12 only refuses the absurd, which would overflow the logits.
_LARGEST_WEIGHT = 1e12

# Note [Tip-Adapter's cache]
# logits(x) = exp(-beta (1 - x K^T)) L: K the cached features (N, E), L their one-hot labels
# (N, C), beta the sharpness of the affinities. beta is chosen from TIP_BETAS by leave-one-out
# accuracy on the cache itself (each cached image scored by the others; ties go to the smaller
# beta), so fitting needs nothing but the few-shot set; with a class of a single image,
# leave-one-out cannot score it, and beta is TIP_DEFAULT_BETA, Tip-Adapter's published value.
TIP_BETAS = (1.0, 2.0, 3.5, 5.5, 7.5, 10.0)
TIP_DEFAULT_BETA = 5.5
_TIP_BLOCK = 1 << 23  # affinities (float64) per block of scored images: 64 MB

# Note [Linear probe]
# Weights and biases minimize the mean cross-entropy of x W^T + b plus lam ||W||^2, by L-BFGS
# with strong-Wolfe line search from zero. lam is chosen from PROBE_LAMBDAS by FOLDS-fold
# cross-validated accuracy on the few-shot set (ties: the larger lam), or PROBE_DEFAULT_LAMBDA
# when a class has a single image. Unit-norm features need weights of norm 10-100 to give
# confident logits, which is where these penalties bite.
PROBE_LAMBDAS = (1e-5, 1e-4, 1e-3, 1e-2)
PROBE_DEFAULT_LAMBDA = 1e-3
_PROBE_ITERATIONS = 200


class HeadError(ValueError):
    """A head that cannot be fitted or used with these features, saying why."""


@dataclasses.dataclass
class Head:
    """A fitted head: its kind, its tensors (float64, CPU) and its logits' temperature.

    gda and linear-probe hold ``weight`` (C, E) and ``bias`` (C,); tip-adapter holds ``keys``
    (N, E), ``labels`` (N,), ``beta`` and ``classes`` (0-dim tensors)."""
    kind: str
    tensors: dict[str, torch.Tensor]
    temperature: float = 1.0

    @property
    def classes(self) -> int:
        t = self.tensors
        return int(t["weight"].shape[0]) if "weight" in t else int(t["classes"])

    @property
    def width(self) -> int:
        t = self.tensors
        return int((t["weight"] if "weight" in t else t["keys"]).shape[1])

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(M, C) float32 logits of features (M, E), on the features' device."""
        if features.dim() != 2 or features.shape[1] != self.width:
            raise HeadError(f"this {self.kind} head takes features of width {self.width}; got "
                            f"shape {tuple(features.shape)} (a head of another model?)")
        x = features.detach().to("cpu", torch.float64)
        t = self.tensors
        if "weight" in t:
            raw = x @ t["weight"].T + t["bias"]
        else:  # affinities to every key: in blocks of rows, to bound their memory
            rows = max(1, _TIP_BLOCK // t["keys"].shape[0])
            raw = torch.cat([x.new_zeros(0, self.classes)] + [
                _tip_logits(block, t["keys"], t["labels"], self.classes, t["beta"])
                for block in x.split(rows)])
        return (self.temperature * raw).float().to(features.device)

    def check(self) -> "Head":
        """Itself, or HeadError naming the tensor if its tensors are not those of a head of its
        kind, of the right dtypes, shapes and finite values, or its temperature is outside
        calibrate's range (a damaged or foreign file: Note [Loaded values are checked])."""
        t = self.tensors
        expected = {"keys", "labels", "beta", "classes"} if self.kind == "tip-adapter" else {
            "weight", "bias"}
        if self.kind not in HEADS or not isinstance(t, dict) or set(t) != expected:
            found = sorted(t) if isinstance(t, dict) else type(t).__name__
            raise HeadError(f"not a {self.kind} head: it holds {found}, a {self.kind} head "
                            f"holds {sorted(expected)}")
        try:
            low, high = TEMPERATURES  # with room for exp(log(t)) rounding either way
            loaded.number(self.temperature, "temperature", low * (1 - 1e-9), high * (1 + 1e-9))
            if self.kind == "tip-adapter":
                keys = loaded.tensor(t["keys"], "keys", (None, None), low=-1.0001, high=1.0001)
                classes = int(loaded.tensor(t["classes"], "classes", (), "integer", low=2))
                loaded.tensor(t["labels"], "labels", keys.shape[:1], "integer", 0, classes - 1)
                loaded.tensor(t["beta"], "beta", (), low=0, high=max(TIP_BETAS))
                if keys.shape[0] == 0:
                    raise loaded.BadValue("keys", "holds no image")
            else:
                big = _LARGEST_WEIGHT
                weight = loaded.tensor(t["weight"], "weight", (None, None), low=-big, high=big)
                loaded.tensor(t["bias"], "bias", weight.shape[:1], low=-big, high=big)
                if weight.shape[0] < 2:
                    raise loaded.BadValue("weight", f"has {weight.shape[0]} class(es), a head "
                                                    "needs 2 or more")
        except loaded.BadValue as error:
            raise HeadError(f"not a usable {self.kind} head: {error}") from None
        return self

    def with_temperature(self, temperature: float) -> "Head":
        return dataclasses.replace(self, temperature=float(temperature))


def _check(features: torch.Tensor, labels: torch.Tensor, classes: int) -> None:
    if classes < 2:
        raise HeadError(f"a head needs at least 2 classes, got {classes}")
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise HeadError(f"a head needs features (N, E) and labels (N,), got "
                        f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise HeadError("the features to fit a head to are not all finite")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise HeadError(f"labels must be in [0, {classes})")
    missing = (torch.bincount(labels, minlength=classes) == 0).nonzero().flatten().tolist()
    if missing:
        raise HeadError(f"a head needs at least one image of every class; none of class(es) "
                        f"{missing[:5]}")


def fit(kind: str, features: torch.Tensor, labels: torch.Tensor, classes: int) -> Head:
    """The head `kind` (one of HEADS) fitted to features (N, E) with labels (N,) in
    [0, classes)."""
    if kind not in HEADS:
        raise HeadError(f"head must be one of {', '.join(HEADS)}, got {kind!r}")
    labels = labels.detach().to("cpu", torch.long)
    _check(features, labels, classes)
    x = features.detach().to("cpu", torch.float64)
    if kind == "gda":
        return Head(kind, _gda(x, labels, classes))
    if kind == "tip-adapter":
        return Head(kind, _tip(x, labels, classes))
    return Head(kind, _probe(x, labels, classes))


def _class_means(x: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    sums = torch.zeros(classes, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)
    return sums / torch.bincount(labels, minlength=classes).double()[:, None]


def ledoit_wolf_shrinkage(centered: torch.Tensor) -> float:
    """The Ledoit-Wolf shrinkage intensity in [0, 1] of the covariance of rows that are already
    centered (N, E): the weight of tr(S)/E I in (1 - s) S + s tr(S)/E I, S = X^T X / N."""
    n, e = centered.shape
    s = centered.T @ centered / n
    mu = torch.trace(s) / e
    delta = float(((s - mu * torch.eye(e, dtype=s.dtype)) ** 2).sum()) / e
    squares = centered ** 2
    beta = float((squares.T @ squares).sum() / n - (s ** 2).sum()) / (e * n)
    beta = min(beta, delta)
    return 1.0 if delta == 0 else beta / delta


def _gda(x: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, torch.Tensor]:
    """Note [GDA]."""
    means = _class_means(x, labels, classes)
    centered = x - means[labels]
    n, e = centered.shape
    scatter = centered.T @ centered / n
    shrinkage = ledoit_wolf_shrinkage(centered)
    scale = float(torch.trace(scatter)) / e
    if scale == 0:  # one image per class: the total variance sets the (irrelevant) scale
        scale = float(((x - x.mean(0)) ** 2).sum()) / (n * e) or 1.0
    covariance = (1 - shrinkage) * scatter + shrinkage * scale * torch.eye(e, dtype=x.dtype)
    weight = torch.linalg.solve(covariance, means.T).T  # Sigma^-1 mu_c, as rows
    return {"weight": weight, "bias": -0.5 * (weight * means).sum(1)}


def _tip_logits(x, keys, key_labels, classes, beta) -> torch.Tensor:
    return torch.exp(-beta * (1 - x @ keys.T)) @ F.one_hot(key_labels, classes).double()


def _tip(x: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, torch.Tensor]:
    """Note [Tip-Adapter's cache]."""
    beta = TIP_DEFAULT_BETA
    if int(torch.bincount(labels, minlength=classes).min()) >= 2:
        affinity = x @ x.T
        affinity.fill_diagonal_(-math.inf)  # leave one out: exp(-inf) = 0
        votes = F.one_hot(labels, classes).double()

        def loo_accuracy(b: float) -> float:
            return float(((torch.exp(-b * (1 - affinity)) @ votes).argmax(1) == labels)
                         .double().mean())

        beta = max(TIP_BETAS, key=lambda b: (loo_accuracy(b), -b))
    return {"keys": x, "labels": labels, "beta": torch.tensor(float(beta), dtype=x.dtype),
            "classes": torch.tensor(classes)}


def _logistic(x: torch.Tensor, labels: torch.Tensor, classes: int,
              lam: float) -> dict[str, torch.Tensor]:
    weight = torch.zeros(classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=_PROBE_ITERATIONS,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + lam * (weight ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return {"weight": weight.detach(), "bias": bias.detach()}


def _probe(x: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, torch.Tensor]:
    """Note [Linear probe]."""
    lam = PROBE_DEFAULT_LAMBDA
    if int(torch.bincount(labels, minlength=classes).min()) >= 2:
        fold = folds(labels, classes)

        def cv_accuracy(candidate: float) -> int:
            right = 0
            for k in range(FOLDS):
                train, held = fold != k, fold == k
                if not bool(held.any()):
                    continue
                p = _logistic(x[train], labels[train], classes, candidate)
                right += int(((x[held] @ p["weight"].T + p["bias"]).argmax(1)
                              == labels[held]).sum())
            return right

        lam = max(PROBE_LAMBDAS, key=lambda c: (cv_accuracy(c), c))
    return _logistic(x, labels, classes, lam)


# Note [Cross-fitted head logits]
# A head fitted to the training images scores those same images far better than new ones (a
# Tip-Adapter cache even contains them), so a prompt tuned against the head's logits on its own
# training images would learn to lean on a head that looks perfect. Each training image is
# scored instead by the head fitted to the other folds: FOLDS stratified folds (every class's
# images dealt round-robin in a seeded order), so every fold's complement holds each class that
# has two images. A class with one image is missing from the complement of its own fold: the
# head abstains on that image (equal logits, so the text alone is trained on it) and ranks the
# class last for the fold's other images. The cost is FOLDS closed-form fits.
def folds(labels: torch.Tensor, classes: int, seed: int = 0) -> torch.Tensor:
    """The fold (0..FOLDS-1) of every image: stratified, round-robin in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty_like(labels)
    for c in range(classes):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=g)]
        fold[members] = torch.arange(members.numel()) % FOLDS
    return fold


def cross_fitted(kind: str, features: torch.Tensor, labels: torch.Tensor, classes: int,
                 scored: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """(N, C) float32 logits (temperature 1) of every training image by the head `kind` fitted
    to the other folds (Note [Cross-fitted head logits]). `features` are what the head is
    fitted to; `scored` (default: the same) what each image is scored by, e.g. its single view
    where the head is fitted to averages of several."""
    labels = labels.detach().to("cpu", torch.long)
    _check(features, labels, classes)
    scored = (features if scored is None else scored).detach().cpu()
    fold = folds(labels, classes, seed)
    out = torch.zeros(labels.numel(), classes)
    for k in range(FOLDS):
        train, held = fold != k, fold == k
        present = labels[train].unique()
        if not bool(held.any()) or present.numel() < 2:
            continue  # nothing to score, or no head to score with: it abstains
        compact = torch.searchsorted(present, labels[train])
        logits = fit(kind, features[train].cpu(), compact, present.numel()).logits(scored[held])
        rows = torch.full((logits.shape[0], classes), float("nan"))
        rows[:, present] = logits
        rows = torch.where(rows.isnan(), logits.min(1, keepdim=True).values, rows)
        known = torch.isin(labels[held], present)
        out[held] = torch.where(known[:, None], rows, torch.zeros(()))
    return out.to(features.device)


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature t > 0 that minimizes the cross-entropy of t * logits: the root of its
    derivative E_softmax[z] - z_label (increasing in t), by bisection on log t within
    [1e-6, 1e6] (the bound itself when the data are separable, or constant logits)."""
    z = logits.detach().double().cpu()
    z = z - z.mean(1, keepdim=True)
    y = labels.detach().cpu().long()

    def slope(log_t: float) -> float:
        p = torch.softmax(math.exp(log_t) * z, dim=1)
        return float(((p * z).sum(1) - z[torch.arange(y.numel()), y]).mean())

    low, high = (math.log(t) for t in TEMPERATURES)
    if slope(high) <= 0:
        return math.exp(high)
    if slope(low) >= 0:
        return math.exp(low)
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if slope(mid) < 0 else (low, mid)
    return math.exp((low + high) / 2)
