"""Configuration: presets, overrides, validation messages, per-split seeds."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pno.cli import app
from pno.config import SPLITS, PipelineConfig, build_config, flatten, parse_overrides


def test_overrides_are_parsed_as_json_or_strings():
    assert parse_overrides(["train.epochs=5", "data.current_params.tau=4.5", "experiment=x y",
                            "drift.columns=[\"u_max\"]", "tracking_uri=null"]) == {
        "train": {"epochs": 5}, "data": {"current_params": {"tau": 4.5}}, "experiment": "x y",
        "drift": {"columns": ["u_max"]}, "tracking_uri": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["train.epochs"])


def test_preset_and_overrides_merge():
    cfg = build_config("smoke", {"train": {"epochs": 3}})
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 16  # rest of the preset kept
    assert cfg.data.resolution == 16
    burgers = build_config("smoke", {"data": {"pde": "burgers"}})
    assert burgers.data.spatial_shape == (64,) and burgers.model.padding == 0
    assert build_config("default", {"data": {"pde": "navier_stokes"}}).data.spatial_shape == (
        64, 64)
    assert build_config() == PipelineConfig()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train": {"epoch": 3}}, r"train\.epoch: Extra inputs are not permitted"),
    ({"data": {"pde": "heat"}}, r"unknown PDE 'heat'; choose one of \['burgers'"),
    ({"data": {"params": {"low": 20.0}}}, r"low \(20.0\) must be below high"),
    ({"data": {"params": {"visc": 1.0}}}, r"darcy has no parameter\(s\) \['visc'\]"),
    ({"data": {"pde": "burgers", "params": {"nu": -1.0}}}, r"nu=-1.0 outside its declared range"),
    ({"model": {"dropout": 0.0}}, r"model\.dropout: Input should be greater than 0"),
    ({"train": {"methods": ["fno", "gp"]}}, r"train\.methods\.1: Input should be 'fno', "),
    ({"train": {"methods": ["fno", "fno"]}}, r"methods must not repeat"),
    ({"train": {"methods": []}}, r"train\.methods: .*at least 1 item"),
    ({"train": {"serve": "ensemble"}}, r"serve='ensemble' is not among methods"),
])
def test_invalid_settings_name_the_setting(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_config("default", overrides)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \['default', 'smoke'\]"):
        build_config("huge")


def test_every_split_has_its_own_seed_and_current_can_shift():
    cfg = build_config("default", {"data": {"current_params": {"tau": 5.0}}})
    seeds = {cfg.data.generating_config(s)["seed"] for s in SPLITS}
    assert len(seeds) == len(SPLITS)
    assert cfg.data.generating_config("current")["tau"] == 5.0
    assert cfg.data.generating_config("train")["tau"] == 3.0


def test_flatten_gives_dotted_params():
    flat = flatten(PipelineConfig())
    assert flat["train.epochs"] == 20 and flat["data.resolution"] is None
    assert flat["drift.columns"] is None
    assert PipelineConfig().drift.columns_for("darcy") == ("a_high_fraction", "u_mean", "u_max",
                                                           "u_rms")


def test_cli_config_prints_resolved_json_and_rejects_bad_keys():
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "--preset", "smoke", "--set", "train.epochs=7"])
    assert ok.exit_code == 0 and '"epochs": 7' in ok.output
    bad = runner.invoke(app, ["config", "--set", "train.epoch=7"])
    assert bad.exit_code == 2 and "train.epoch" in bad.output


def test_served_method_is_the_first_probabilistic_one():
    assert PipelineConfig().train.served_method == "pno-dropout"
    only_fno = build_config("default", {"train": {"methods": ["fno"]}})
    assert only_fno.train.served_method == "fno"
    chosen = build_config("default", {"train": {"methods": ["fno", "mc-dropout", "ensemble"],
                                                "serve": "ensemble"}})
    assert chosen.train.served_method == "ensemble"


@pytest.mark.parametrize("pde", ["burgers", "ks", "navier_stokes"])
def test_default_rollout_split_can_be_generated(pde: str):
    """The longest integration of a default run (the rollout split: rollout_steps x t_final)
    stays within the solver's stability limits; 16 trajectories (a Navier-Stokes solver chunk) of
    the default parameters. (The forced Navier-Stokes flow spins up and once passed the CFL limit
    at the then-default 5 steps.)"""
    from pdes.registry import build_split

    cfg = build_config("default", {"data": {"pde": pde, "n_rollout": 16}}).data
    gen = cfg.generating_config("rollout")
    assert gen["n_samples"] == 16 and gen["n_frames"] == cfg.rollout_steps + 1
    ds = build_split(gen)
    assert ds.trajectory is not None and ds.trajectory.shape[1] == cfg.rollout_steps + 1
