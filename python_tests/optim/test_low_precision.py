"""bfloat16 parameters, where MeZO's users see the loss stop moving (the half-precision failure):
a loss returned in bfloat16 rounds the two points of an estimate to the same value, and adding
then subtracting a perturbation in bfloat16 does not give the weights back. Here the
perturbation is computed in float32 and rounded once, the weights come back bitwise from the
exception-safe copy, and a loss returned in float32 keeps every estimate."""

import pytest
import torch
import torch.nn.functional as F

import sharpzo_ext as sz


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 10)).to(dtype)


X = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
Y = torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(2))


def _loss(model, upcast):
    logits = model(X.to(next(model.parameters()).dtype))
    return F.cross_entropy(logits.float() if upcast else logits, Y)


def _differences(model, upcast, directions=50, eps=1e-3):
    """f(x + eps z_j) - f(x - eps z_j) for `directions` directions, as ZOSGD evaluates them."""
    out = []
    optimizer = sz.optim.ZOSGD(model.parameters(), lr=1e-30, eps=eps, seed=0)
    for _ in range(directions):
        seen = []

        def closure():
            loss = _loss(model, upcast)
            seen.append(loss)
            return loss

        optimizer.step(closure)
        out.append(float(seen[0]) - float(seen[1]))
    return torch.tensor(out)


def test_a_bf16_loss_rounds_the_estimates_away_and_a_float32_loss_keeps_them():
    model = _model(torch.bfloat16)
    rounded = _differences(model, upcast=False)  # the same 50 directions, the same weights
    kept = _differences(model, upcast=True)
    # MeZO's failure: the difference of two bf16 losses near 2.3 is 0 or a whole bf16 step
    # (2^-6): a third of the steps are not taken and the others have one size, whatever the slope
    ulp = 2.0 ** -6
    assert (rounded == 0).float().mean() > 0.3
    assert set((rounded.abs() / ulp).tolist()) <= {0.0, 1.0, 2.0}
    assert (kept == 0).sum() == 0 and kept.unique().numel() == kept.numel()


def test_bf16_weights_come_back_bitwise_after_every_evaluation():
    model = _model(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = sz.optim.ZOSGD(model.parameters(), lr=0.1, eps=1e-2, seed=0)
    for _ in range(20):
        optimizer.step(lambda: torch.tensor(1.0))  # a constant loss: the estimate is 0
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    # the naive loop (x += eps z; x -= 2 eps z; x += eps z, each rounded to bf16) drifts
    naive = [b.clone() for b in before]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        for p in naive:
            z = torch.randn(p.shape, generator=g).to(p.dtype)
            for sign in (1, -2, 1):
                p.add_(z, alpha=sign * 1e-2)
    assert not all(torch.equal(b, p) for b, p in zip(before, naive))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_loss_falls_in_either_dtype(dtype):
    model = _model(dtype)
    optimizer = sz.optim.ZOSGD(model.parameters(), lr=0.05, eps=1e-2, q=4, seed=0)
    with torch.no_grad():
        first = float(_loss(model, upcast=True))
    for _ in range(150):
        optimizer.step(lambda: _loss(model, upcast=True))
    with torch.no_grad():
        assert float(_loss(model, upcast=True)) < 0.9 * first
