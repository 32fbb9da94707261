"""The FNO backbone: shapes, explicit sampling, resolution invariance, spectral references."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from model.fno import FNO, FNOConfig


def test_forward_shape_and_deterministic_in_train_mode(xy, fno_cfg):
    x, _ = xy
    model = FNO(fno_cfg).train()  # .train() must not switch sampling on
    out1, out2 = model(x), model(x)
    assert out1.shape == (6, 1, 16, 16)
    assert torch.equal(out1, out2)


def test_sample_shape_spread_and_reproducible(xy, fno_cfg):
    x, _ = xy
    model = FNO(fno_cfg)
    s1 = model.sample(x, 5, generator=torch.Generator().manual_seed(1))
    s2 = model.sample(x, 5, generator=torch.Generator().manual_seed(1))
    s3 = model.sample(x, 5, generator=torch.Generator().manual_seed(2))
    assert s1.shape == (5, 6, 1, 16, 16)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)
    assert (s1.std(0) > 0).float().mean() > 0.9  # samples differ at almost every point


def test_deterministic_model_has_no_distribution(xy, fno_cfg):
    model = FNO(replace(fno_cfg, dropout=0.0))
    assert not model.probabilistic
    with pytest.raises(ValueError, match="no predictive distribution"):
        model.sample(xy[0], 3)


def test_wrong_input_channels_raise(fno_cfg):
    with pytest.raises(ValueError, match=r"expected input \(B, 1, H, W\)"):
        FNO(fno_cfg)(torch.zeros(2, 3, 16, 16))


def test_config_validation():
    with pytest.raises(ValueError, match="dropout"):
        FNOConfig(dropout=1.5)


def test_resolution_invariance_of_a_smooth_input(fno_cfg):
    """The same weights evaluate on a finer grid; for a band-limited input, the output on the fine
    grid restricted to the coarse nodes is close to the coarse output."""
    torch.manual_seed(0)
    model = FNO(replace(fno_cfg, padding=0, dropout=0.0))

    def field(n: int) -> torch.Tensor:
        g = torch.linspace(0, 1, n)
        xx, yy = torch.meshgrid(g, g, indexing="ij")
        return (5 + torch.sin(2 * torch.pi * xx) * torch.cos(2 * torch.pi * yy))[None, None]

    coarse, fine = model(field(17)), model(field(33))
    assert fine.shape == (1, 1, 33, 33)
    rel = (fine[..., ::2, ::2] - coarse).norm() / coarse.norm()
    assert rel < 0.05


def test_spectral_conv_equals_the_rfft2_reference():
    """The 1D-transform implementation equals irfft2 of the weighted, truncated rfft2."""
    from model.fno import SpectralConv2d

    torch.manual_seed(0)
    conv = SpectralConv2d(3, 2, modes=4).double()
    x = torch.randn(5, 3, 12, 10, dtype=torch.float64)
    m = 4
    x_ft = torch.fft.rfft2(x, norm="ortho")
    w = torch.view_as_complex(conv.weight.detach()).reshape(2, m, m, 3, 2)
    ref_ft = torch.zeros(5, 2, 12, 6, dtype=torch.complex128)
    ref_ft[:, :, :m, :m] = torch.einsum("bixy,xyio->boxy", x_ft[:, :, :m, :m], w[0])
    ref_ft[:, :, -m:, :m] = torch.einsum("bixy,xyio->boxy", x_ft[:, :, -m:, :m], w[1])
    ref = torch.fft.irfft2(ref_ft, s=(12, 10), norm="ortho")
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)


def test_one_dimensional_fno_shapes_sampling_and_super_resolution(fno_cfg):
    cfg1 = replace(fno_cfg, dim=1, padding=0)
    model = FNO(cfg1, seed=0)
    x = torch.linspace(0, 1, 33).sin()[None, None].repeat(3, 1, 1)
    assert model(x).shape == (3, 1, 33)
    assert model.sample(x, 4, generator=torch.Generator().manual_seed(0)).shape == (4, 3, 1, 33)
    with pytest.raises(ValueError, match=r"expected input \(B, 1, W\)"):
        model(torch.zeros(3, 1, 8, 8))
    g = torch.linspace(0, 1, 65)
    fine = model(torch.sin(2 * torch.pi * g)[None, None])
    coarse = model(torch.sin(2 * torch.pi * g[::2])[None, None])
    assert (fine[..., ::2] - coarse).norm() / coarse.norm() < 0.05


def test_spectral_conv1d_equals_the_rfft_reference():
    from model.fno import SpectralConv1d

    torch.manual_seed(0)
    conv = SpectralConv1d(3, 2, modes=5).double()
    x = torch.randn(4, 3, 20, dtype=torch.float64)
    w = torch.view_as_complex(conv.weight.detach())  # (m, Ci, Co)
    ref_ft = torch.zeros(4, 2, 11, dtype=torch.complex128)
    ref_ft[..., :5] = torch.einsum("bim,mio->bom", torch.fft.rfft(x, norm="ortho")[..., :5], w)
    torch.testing.assert_close(conv(x), torch.fft.irfft(ref_ft, n=20, norm="ortho"),
                               rtol=1e-12, atol=1e-12)
