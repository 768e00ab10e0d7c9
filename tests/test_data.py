"""The time-series windows shared by Informer and PatchTSMixer, on the real ETTh1 file."""

import numpy as np
import pandas as pd
import pytest
import torch

from hf_plugins.data import load_ett, load_vic_elec, num_time_features, resolve_data_file, time_features


def test_ett_standard_split(data_dir):
    ctx, pred = 96, 24
    splits = load_ett("ETTh1", context_length=ctx, prediction_length=pred, data_dir=data_dir)
    month = 30 * 24
    assert len(splits.train) == 12 * month - ctx - pred + 1
    assert len(splits.validation) == 4 * month + ctx - ctx - pred + 1
    assert len(splits.test) == 4 * month - pred + 1
    item = splits.train[0]
    assert item["past_values"].shape == (ctx, 7)
    assert item["future_values"].shape == (pred, 7)
    assert item["past_time_features"].shape == (ctx, 4)
    assert item["future_time_features"].shape == (pred, 4)
    # windows are contiguous: the future of window i continues its past
    raw = pd.read_csv(data_dir / "ett" / "ETTh1.csv")
    values = raw.drop(columns="date").to_numpy()
    scaled = (values - splits.mean) / splits.std
    np.testing.assert_allclose(splits.train[5]["future_values"][0].numpy(), scaled[5 + ctx], rtol=1e-5, atol=1e-5)
    # the validation windows start context_length rows before month 12, the test windows before month 16
    np.testing.assert_allclose(splits.validation[0]["future_values"][0].numpy(), scaled[12 * month], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(splits.test[0]["future_values"][0].numpy(), scaled[16 * month], rtol=1e-5, atol=1e-5)
    # the scaler is fitted on the training months only
    np.testing.assert_allclose(splits.mean, values[: 12 * month].mean(axis=0))
    np.testing.assert_allclose(splits.inverse_transform(splits.test[0]["future_values"]).numpy(), values[16 * month : 16 * month + pred], rtol=1e-4, atol=1e-3)


def test_ett_feature_modes(data_dir):
    ms = load_ett("ETTh1", 48, 12, features="MS", data_dir=data_dir)
    assert ms.train[0]["past_values"].shape == (48, 7) and ms.train[0]["future_values"].shape == (12, 1)
    s = load_ett("ETTh1", 48, 12, features="S", data_dir=data_dir)
    assert s.train[0]["past_values"].shape == (48, 1) and s.channels == ["OT"]
    with pytest.raises(ValueError, match="features='X'"):
        load_ett("ETTh1", 48, 12, features="X", data_dir=data_dir)
    with pytest.raises(ValueError, match="target='nope'"):
        load_ett("ETTh1", 48, 12, target="nope", data_dir=data_dir)


def test_time_features_match_the_reference_definition():
    dates = pd.date_range("2016-07-01 00:00", periods=48, freq="h")
    feats = time_features(dates, "h")
    assert feats.shape == (48, num_time_features("h")) == (48, 4)
    assert feats.min() >= -0.5 and feats.max() <= 0.5
    assert feats[0, 0] == pytest.approx(-0.5) and feats[23, 0] == pytest.approx(0.5)  # hour of day
    with pytest.raises(ValueError, match="freq='q'"):
        time_features(dates, "q")


def test_missing_file_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HFP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HFP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="nothing/here.csv"):
        resolve_data_file("nothing/here.csv")


def test_offline_default_series_ships_in_a_wheel():
    splits = load_vic_elec(context_length=64, prediction_length=16)
    assert splits.channels == ["Demand", "Temperature"]
    batch = torch.utils.data.default_collate([splits.train[i] for i in range(4)])
    assert batch["past_values"].shape == (4, 64, 2)
    assert abs(float(splits.train.values[:, 0].mean())) < 0.2
