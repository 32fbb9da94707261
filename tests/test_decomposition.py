"""Aleatoric/epistemic split by the law of total variance, against hand computations and against
the variance of the methods' own predictive samples."""

from __future__ import annotations

import pytest
import torch
from test_methods import gen, make_data, make_model

from model.decomposition import decompose, summary, total_variance_split


def test_split_by_hand_adds_up_to_the_mixture_variance():
    means = torch.tensor([[[0.0, 1.0]], [[2.0, 1.0]]])  # (K=2, B=1, 2)
    variances = torch.tensor([[[1.0, 0.5]], [[3.0, 0.5]]])
    parts = total_variance_split(means, variances)
    assert parts["aleatoric"].tolist() == [[2.0, 0.5]]
    assert parts["epistemic"].tolist() == [[1.0, 0.0]]  # population variance over the draws
    assert parts["total"].tolist() == [[3.0, 0.5]]
    s = summary(parts)
    assert s["epistemic_share"] == pytest.approx(1.0 / 3.5)
    assert s["epistemic_dominant_points"] == 0.0
    with pytest.raises(ValueError, match="K, B"):
        total_variance_split(means, variances[:1])


@torch.no_grad()
def test_gaussian_member_ensemble_total_matches_its_sample_variance():
    """An ensemble of PNO-R members is a Gaussian mixture: the total of the split equals the
    variance of many draws from ``sample``, and both parts are nonzero."""
    model = make_model("ensemble", dim=1, ensemble_member="pno-reparam").eval()
    x, _ = make_data(1, b=2)
    parts = total_variance_split(*model.posterior_draws(x, 0))
    draws = model.sample(x, 40000, gen(3))
    empirical = draws.var(dim=0)
    torch.testing.assert_close(empirical, parts["total"], rtol=0.05, atol=0.0)
    assert float(parts["aleatoric"].min()) > 0 and float(parts["epistemic"].min()) > 0
    # each member's variance is its scale head squared
    mean0, scale0 = model.members[0].heads(x)
    torch.testing.assert_close(model.posterior_draws(x, 0)[1][0], scale0.square())
    torch.testing.assert_close(model.posterior_draws(x, 0)[0][0], mean0)


@torch.no_grad()
def test_fno_ensemble_is_all_epistemic_the_member_variance():
    model = make_model("ensemble", dim=1).eval()
    x, _ = make_data(1, b=2)
    preds = torch.stack([m(x) for m in model.members])
    parts = decompose(model, x, n_draws=0, batch_size=1)
    assert parts["draws"] == len(model.members) == 3
    assert float(parts["aleatoric"].abs().max()) == 0.0
    torch.testing.assert_close(parts["epistemic"], preds.var(dim=0, correction=0))


@pytest.mark.parametrize("method", ["mc-dropout", "variational"])
@torch.no_grad()
def test_weight_posterior_draws_are_the_methods_samples(method: str):
    """Same generator, same draws: the split's epistemic part is the population variance of the
    method's own samples, and there is no aleatoric part (no noise model)."""
    model = make_model(method, dim=2).eval()
    x, _ = make_data(2, b=3)
    means, variances = model.posterior_draws(x, 16, gen(5))
    torch.testing.assert_close(means, model.sample(x, 16, gen(5)))
    assert float(variances.abs().max()) == 0.0
    parts = decompose(model, x, 16, batch_size=8, seed=5)
    torch.testing.assert_close(parts["epistemic"], means.var(dim=0, correction=0))
    assert float(parts["epistemic"].min()) > 0


@pytest.mark.parametrize("method", ["pno-reparam", "pno-dropout", "fno", "deeponet"])
def test_methods_without_the_structure_say_so(method: str):
    model = make_model(method, dim=1)
    x, _ = make_data(1, b=2)
    assert model.posterior is None
    with pytest.raises(ValueError, match="no posterior"):
        decompose(model, x, 4)
    with pytest.raises(ValueError, match="no posterior"):
        model.posterior_draws(x, 4)
