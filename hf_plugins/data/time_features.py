"""Calendar features of a date index, as the Informer reference code computes them (``timeenc=1``).

Each feature is scaled to [-0.5, 0.5]. The number of features depends on the sampling frequency.
"""

from __future__ import annotations

import numpy as np

# frequency -> the features used, finest first (Informer's `time_features_from_frequency_str`)
FREQ_FEATURES = {
    "s": ("second_of_minute", "minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "t": ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "h": ("hour_of_day", "day_of_week", "day_of_month", "day_of_year"),
    "d": ("day_of_week", "day_of_month", "day_of_year"),
    "b": ("day_of_week", "day_of_month", "day_of_year"),
    "w": ("day_of_month", "week_of_year"),
    "m": ("month_of_year",),
}


def num_time_features(freq: str) -> int:
    """How many calendar features :func:`time_features` gives for ``freq``."""
    return len(FREQ_FEATURES[_check_freq(freq)])


def time_features(dates, freq: str = "h") -> np.ndarray:
    """(len(dates), num_time_features(freq)) float32 array of calendar features in [-0.5, 0.5]."""
    import pandas as pd

    index = pd.DatetimeIndex(pd.to_datetime(dates))
    columns = {
        "second_of_minute": index.second / 59.0,
        "minute_of_hour": index.minute / 59.0,
        "hour_of_day": index.hour / 23.0,
        "day_of_week": index.day_of_week / 6.0,
        "day_of_month": (index.day - 1) / 30.0,
        "day_of_year": (index.day_of_year - 1) / 365.0,
        "month_of_year": (index.month - 1) / 11.0,
        "week_of_year": (index.isocalendar().week.to_numpy() - 1) / 52.0,
    }
    feats = [np.asarray(columns[name], dtype=np.float64) - 0.5 for name in FREQ_FEATURES[_check_freq(freq)]]
    return np.stack(feats, axis=1).astype(np.float32)


def _check_freq(freq: str) -> str:
    key = "t" if str(freq).lower() in ("min", "t") else str(freq).lower()
    if key not in FREQ_FEATURES:
        raise ValueError(f"freq={freq!r} is not supported; use one of {sorted(FREQ_FEATURES)}")
    return key
