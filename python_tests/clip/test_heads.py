"""The closed-form heads (sharpzo_ext/clip/task/heads.py) against scikit-learn and closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F

from sharpzo_ext.clip.task import heads


def gaussian_classes(classes=5, shots=8, width=12, seed=0, spread=0.6, draw=0):
    """Unit-norm features of `classes` Gaussian clusters (centers from `seed`), `shots` each
    (noise from `draw`), labels in order."""
    centers = torch.randn(classes, width, generator=torch.Generator().manual_seed(seed),
                          dtype=torch.float64)
    labels = torch.arange(classes).repeat_interleave(shots)
    g = torch.Generator().manual_seed(1000 + draw)
    x = centers[labels] + spread * torch.randn(labels.numel(), width, generator=g,
                                               dtype=torch.float64)
    return F.normalize(x, dim=1), labels


def test_ledoit_wolf_intensity_is_scikit_learns():
    from sklearn.covariance import ledoit_wolf_shrinkage

    for seed, (n, e) in enumerate([(40, 12), (160, 512), (30, 3)]):
        x = torch.randn(n, e, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x[:, 0] *= 5  # far from isotropic
        x = x - x.mean(0)
        assert heads.ledoit_wolf_shrinkage(x) == pytest.approx(
            ledoit_wolf_shrinkage(x.numpy(), assume_centered=True), rel=1e-10)


@pytest.mark.parametrize("width", [12, 64])
def test_gda_is_scikit_learns_shrunk_lda(width):
    """With balanced classes, scikit-learn's LDA shrinks each class's covariance by the same s
    and averages them: the pooled covariance shrunk by s, so its decision function is GDA's
    logits plus a constant (its log prior)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, labels = gaussian_classes(width=width)
    head = heads.fit("gda", x, labels, 5)
    means = torch.stack([x[labels == c].mean(0) for c in range(5)])
    shrinkage = heads.ledoit_wolf_shrinkage(x - means[labels])
    assert 0 < shrinkage < 1
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x.numpy(),
                                                                              labels.numpy())
    test, _ = gaussian_classes(width=width, draw=1)
    ours = head.logits(test).double()
    theirs = torch.from_numpy(lda.decision_function(test.numpy()))
    torch.testing.assert_close(ours - ours.mean(1, keepdim=True),
                               theirs - theirs.mean(1, keepdim=True), rtol=0, atol=1e-4)


def test_gda_at_one_shot_is_the_nearest_class_mean():
    x, labels = gaussian_classes(classes=6, shots=1, width=20)
    test, _ = gaussian_classes(classes=6, shots=3, width=20, draw=2)
    logits = heads.fit("gda", x, labels, 6).logits(test).double()
    # Sigma = v I: logit_c = (x . mu_c - |mu_c|^2 / 2) / v = -(|x - mu_c|^2 - |x|^2) / (2 v)
    distance = torch.cdist(test, x) ** 2
    expected = -distance / 2
    scale = (logits[:, 0] - logits[:, 1]) / (expected[:, 0] - expected[:, 1])
    assert torch.allclose(scale, scale[0].expand_as(scale), rtol=1e-5) and float(scale[0]) > 0
    torch.testing.assert_close(logits - logits.mean(1, keepdim=True),  # float32 logits
                               scale[0] * (expected - expected.mean(1, keepdim=True)),
                               rtol=1e-5, atol=1e-5)


def test_gda_handles_a_width_far_above_the_image_count():
    """ViT-B/16's 512-wide features, 10 classes x 16 shots: the covariance alone is singular."""
    x, labels = gaussian_classes(classes=10, shots=16, width=512, spread=2.0)
    head = heads.fit("gda", x, labels, 10)
    test, test_labels = gaussian_classes(classes=10, shots=16, width=512, spread=2.0, draw=1)
    logits = head.logits(test)
    assert bool(torch.isfinite(logits).all())
    assert float((logits.argmax(1) == test_labels).double().mean()) > 0.9


def test_tip_adapter_is_its_formula_and_picks_beta_by_leave_one_out():
    x, labels = gaussian_classes(classes=4, shots=5, width=8)
    head = heads.fit("tip-adapter", x, labels, 4)
    beta = float(head.tensors["beta"])
    assert beta in heads.TIP_BETAS
    test, _ = gaussian_classes(classes=4, shots=2, width=8, draw=3)
    expected = torch.exp(-beta * (1 - test @ x.T)) @ F.one_hot(labels, 4).double()
    torch.testing.assert_close(head.logits(test).double(), expected, rtol=1e-6, atol=1e-6)

    def loo(b):
        a = torch.exp(-b * (1 - x @ x.T))
        a.fill_diagonal_(0)
        return float(((a @ F.one_hot(labels, 4).double()).argmax(1) == labels).double().mean())

    assert loo(beta) == max(loo(b) for b in heads.TIP_BETAS)
    one_shot = heads.fit("tip-adapter", x[::5], labels[::5], 4)
    assert float(one_shot.tensors["beta"]) == heads.TIP_DEFAULT_BETA


def test_the_linear_probe_is_scikit_learns_logistic_regression():
    """mean CE + lam |W|^2 is scikit-learn's 0.5 |W|^2 + C sum CE with C = 1 / (2 N lam)."""
    from sklearn.linear_model import LogisticRegression

    x, labels = gaussian_classes(classes=4, shots=10, width=6, spread=1.0)
    lam = 1e-3
    ours = heads._logistic(x, labels, 4, lam)
    theirs = LogisticRegression(C=1 / (2 * labels.numel() * lam), tol=1e-10,
                                max_iter=10000).fit(x.numpy(), labels.numpy())
    test, _ = gaussian_classes(classes=4, shots=5, width=6, spread=1.0, draw=4)
    probabilities = torch.softmax(test @ ours["weight"].T + ours["bias"], dim=1)
    torch.testing.assert_close(probabilities, torch.from_numpy(theirs.predict_proba(test.numpy())),
                               rtol=0, atol=2e-4)
    separated, labels = gaussian_classes(classes=4, shots=10, width=6, spread=0.2)
    head = heads.fit("linear-probe", separated, labels, 4)
    test, _ = gaussian_classes(classes=4, shots=10, width=6, spread=0.2, draw=5)
    assert bool((head.logits(test).argmax(1) == labels).all())


@pytest.mark.parametrize("kind", heads.HEADS)
def test_cross_fitted_logits_come_from_the_other_folds(kind):
    x, labels = gaussian_classes(classes=3, shots=6, width=5)
    scored = x.flip(1)  # the rows scored need not be the rows fitted
    out = heads.cross_fitted(kind, x, labels, 3, scored=scored, seed=7)
    fold = heads.folds(labels, 3, seed=7)
    for k in range(heads.FOLDS):
        held = fold == k
        assert torch.bincount(labels[held], minlength=3).max() <= 2  # stratified, round-robin
        alone = heads.fit(kind, x[~held], labels[~held], 3).logits(scored[held])
        torch.testing.assert_close(out[held], alone)


def test_cross_fitting_abstains_on_a_class_of_one_image():
    x, labels = gaussian_classes(classes=3, shots=3, width=5)
    keep = torch.tensor([True] * 6 + [True, False, False])  # class 2 keeps one image
    x, labels = x[keep], labels[keep]
    out = heads.cross_fitted("gda", x, labels, 3)
    fold = heads.folds(labels, 3)
    lonely = int((labels == 2).nonzero())
    assert torch.equal(out[lonely], torch.zeros(3))  # equal logits: no vote
    same_fold = (fold == fold[lonely]) & (labels != 2)
    others = heads.fit("gda", x[fold != fold[lonely]], labels[fold != fold[lonely]], 2)
    expected = others.logits(x[same_fold])
    torch.testing.assert_close(out[same_fold][:, :2], expected)
    torch.testing.assert_close(out[same_fold][:, 2], expected.min(1).values)  # ranked last
    one_shot = heads.cross_fitted("gda", x[labels != 2][::3], labels[labels != 2][::3], 2)
    assert torch.equal(one_shot, torch.zeros(2, 2))  # no fold can score: the head abstains


@pytest.mark.parametrize("kind", heads.HEADS)
def test_heads_refuse_what_they_cannot_fit(kind):
    x, labels = gaussian_classes(classes=3, shots=2, width=5)
    with pytest.raises(heads.HeadError, match="at least 2 classes"):
        heads.fit(kind, x[:2], torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(heads.HeadError, match=r"none of class\(es\) \[3\]"):
        heads.fit(kind, x, labels, 4)
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(heads.HeadError, match="not all finite"):
        heads.fit(kind, bad, labels, 3)
    head = heads.fit(kind, x, labels, 3)
    with pytest.raises(heads.HeadError, match="features of width 5"):
        head.logits(torch.zeros(2, 7))
    with pytest.raises(heads.HeadError, match="head must be one of"):
        heads.fit("knn", x, labels, 3)


def test_calibration_minimizes_the_cross_entropy():
    x, labels = gaussian_classes(classes=5, shots=8, width=12, spread=1.0)
    logits = heads.fit("gda", x, labels, 5).logits(gaussian_classes(spread=1.0, draw=6)[0])
    t = heads.calibrate(logits, labels)

    def ce(scale):
        return float(F.cross_entropy(scale * logits.double(), labels))

    assert 1e-3 < t < 1e3 and ce(t) <= min(ce(t * 1.01), ce(t / 1.01))
    separable = torch.eye(3) * 5
    assert heads.calibrate(separable, torch.arange(3)) == pytest.approx(1e6)


def test_tip_adapter_scores_in_blocks_as_in_one(monkeypatch):
    x, labels = gaussian_classes(classes=3, shots=4, width=6)
    head = heads.fit("tip-adapter", x, labels, 3)
    whole = head.logits(x)
    monkeypatch.setattr(heads, "_TIP_BLOCK", 12 * 5)  # blocks of 5 rows against 12 keys
    torch.testing.assert_close(head.logits(x), whole)
    assert head.logits(x[:0]).shape == (0, 3)
