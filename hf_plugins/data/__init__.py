"""Data for recipes, tests and benchmarks: real public sets, read from a directory or a PyPI package."""

from .files import PUBLIC_URLS, resolve_data_file
from .packages import package_data_file
from .time_features import num_time_features, time_features
from .timeseries import ForecastSplits, TimeSeriesWindows, load_ett, load_vic_elec

__all__ = [
    "PUBLIC_URLS",
    "ForecastSplits",
    "TimeSeriesWindows",
    "load_ett",
    "load_vic_elec",
    "num_time_features",
    "package_data_file",
    "resolve_data_file",
    "time_features",
]
