"""Aleatoric and epistemic parts of the predictive variance, by the law of total variance.

For a method with a posterior over weights or members (:meth:`Surrogate.posterior_draws`), draw
``k`` gives a conditional mean ``mu_k`` and variance ``v_k`` per point, and

    Var[y] = E_k[v_k] + Var_k[mu_k]  =  aleatoric + epistemic,

with both expectations over the K draws (population variance, so the parts add up exactly to the
variance of the mixture). A method whose draws are deterministic fields (MC dropout, the variational
FNO, an ensemble of FNOs) has no noise model, so its aleatoric part is exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.methods import Surrogate


def total_variance_split(means: Tensor, variances: Tensor) -> dict[str, Tensor]:
    """(K, B, *field) conditional means and variances -> ``aleatoric``, ``epistemic`` and
    ``total`` variance, each (B, *field)."""
    if means.shape != variances.shape or means.dim() < 2:
        raise ValueError(f"means {tuple(means.shape)} and variances {tuple(variances.shape)} "
                         "must both be (K, B, *field)")
    aleatoric = variances.mean(dim=0)
    epistemic = means.var(dim=0, correction=0)
    return {"aleatoric": aleatoric, "epistemic": epistemic, "total": aleatoric + epistemic}


@torch.no_grad()
def decompose(model: Surrogate, x: Tensor, n_draws: int, batch_size: int = 8,
              seed: int = 0) -> dict[str, Tensor]:
    """The split for every input of ``x`` (N, C_in, *spatial), streamed over batches: three
    (N, C_out, *spatial) tensors, and ``draws`` (how many posterior draws each used; an ensemble
    uses its members, whatever ``n_draws`` says). Raises ``ValueError`` for a method without the
    structure."""
    if model.posterior is None:
        raise ValueError(f"{model.method!r} has no posterior over weights or members")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {"aleatoric": [], "epistemic": [], "total": []}
    draws = 0
    for i in range(0, x.shape[0], batch_size):
        means, variances = model.posterior_draws(x[i:i + batch_size], n_draws, gen)
        draws = means.shape[0]
        for key, value in total_variance_split(means, variances).items():
            parts[key].append(value)
    return {**{key: torch.cat(values) for key, values in parts.items()}, "draws": draws}


def summary(parts: dict[str, Tensor | int]) -> dict[str, float]:
    """Field-averaged variances, the epistemic share of the total, and the share of points where
    the epistemic part is the larger one."""
    alea, epi, tot = (parts[k].double() for k in ("aleatoric", "epistemic", "total"))
    return {"aleatoric_var": float(alea.mean()), "epistemic_var": float(epi.mean()),
            "total_var": float(tot.mean()),
            "epistemic_share": float(epi.sum() / tot.sum()) if float(tot.sum()) > 0 else 0.0,
            "epistemic_dominant_points": float((epi > alea).double().mean())}
