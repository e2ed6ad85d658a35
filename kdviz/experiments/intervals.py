"""How sure each experiment number is: Wilson intervals on accuracies, paired intervals on gains
over the hard-label baseline, the aggregate over seeds, and the verdicts against the papers.

Conventions of a result table (one row per model or condition):

    accuracy, accuracy_low, accuracy_high   the accuracy on the eval split and its 95% interval
    accuracy_sd                             its standard deviation over seeds (2 or more seeds)
    hard_run_id                             the row's hard-label baseline (same images, same seed)
    gain, gain_low, gain_high, within_noise accuracy minus the baseline's: Newcombe's paired
                                            interval; within_noise when it contains 0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from kdviz import stats

INF = math.inf
BEATS = (0.0, INF)  # the published claim "better than the baseline", as a region of differences
TRIPLE_SUFFIXES = ("_low", "_high")


# ---------------------------------------------------------------------------- one seed


def add_wilson(table: pd.DataFrame, column: str, n: int | Sequence[int]) -> pd.DataFrame:
    """``column``_low and ``column``_high: the Wilson 95% interval of each row's rate, measured on
    ``n`` images (one number, or one per row)."""
    table = table.copy()
    counts = [n] * len(table) if isinstance(n, int | np.integer) else list(n)
    lows, highs = [], []
    for value, count in zip(table[column], counts, strict=True):
        if value is None or not np.isfinite(value) or not count:
            lows.append(np.nan)
            highs.append(np.nan)
            continue
        low, high = stats.wilson_interval(round(float(value) * int(count)), int(count))
        lows.append(low)
        highs.append(high)
    at = table.columns.get_loc(column) + 1
    table.insert(at, f"{column}_low", lows)
    table.insert(at + 1, f"{column}_high", highs)
    return table


def add_paired_gain(
    table: pd.DataFrame, correct: Callable[[str], Tensor], baseline_column: str = "hard_run_id"
) -> pd.DataFrame:
    """gain, gain_low, gain_high, within_noise: each row's model against the baseline named in
    ``baseline_column``, on the same images (``correct(run_id)`` -> (N,) bool). Rows without a
    run or a baseline, and the baseline itself, get NaN."""
    if baseline_column not in table:
        return table
    table = table.copy()
    out: dict[str, list[Any]] = {"gain": [], "gain_low": [], "gain_high": [], "within_noise": []}
    for run_id, base_id in zip(table["run_id"], table[baseline_column], strict=True):
        if not run_id or not base_id or run_id == base_id or _missing(run_id) or _missing(base_id):
            for key in out:
                out[key].append(np.nan if key != "within_noise" else None)
            continue
        res = stats.paired_difference(correct(run_id), correct(base_id))
        out["gain"].append(res.diff)
        out["gain_low"].append(res.low)
        out["gain_high"].append(res.high)
        out["within_noise"].append(bool(res.within_noise))
    for key, values in out.items():
        if key in table:
            table[key] = values
        else:
            table.insert(len(table.columns) - _trailing_ids(table), key, values)
    return table


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _trailing_ids(table: pd.DataFrame) -> int:
    """How many run-id columns end the table (new columns go before them)."""
    count = 0
    for column in reversed(list(table.columns)):
        if "run_id" not in str(column):
            break
        count += 1
    return count


# ---------------------------------------------------------------------------- several seeds


def aggregate_seeds(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One table from the same experiment repeated over seeds (row i of every table is the same
    condition): numbers are averaged; for every X with X_low / X_high the interval is the wider
    of (a) the test images' noise, the seeds' mean interval half-widths around the mean, and
    (b) the seeds' spread, the t-interval over the seeds (stats.mean_sd_interval); X_sd is the
    standard deviation over seeds. Text and run ids come from the first seed."""
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    if any(len(t) != len(first) or list(t.columns) != list(first.columns) for t in tables):
        raise ValueError("every seed must give a table of the same shape")
    out = first.copy()
    triples = [c for c in first.columns if f"{c}_low" in first and f"{c}_high" in first]
    bounds = {f"{c}{s}" for c in triples for s in TRIPLE_SUFFIXES}
    for column in first.columns:
        if column in bounds or "run_id" in str(column) or column == "within_noise":
            continue
        if all(t[column].equals(first[column]) for t in tables[1:]):
            continue  # a condition (a T, a smoothing): kept exact, 3 x 0.1 / 3 is not 0.1
        stacked = _stack(tables, column)
        if stacked is not None:
            out[column] = _nanmean(stacked)
    for column in triples:
        values, lows, highs = (_stack(tables, column + s) for s in ("", *TRIPLE_SUFFIXES))
        sds, new_low, new_high = [], [], []
        for i in range(len(first)):
            mean, sd, t_low, t_high = stats.mean_sd_interval(values[:, i])
            below = _nanmean(values[:, i] - lows[:, i])
            above = _nanmean(highs[:, i] - values[:, i])
            floor, ceiling = (-1.0, 1.0) if column == "gain" else (0.0, 1.0)  # rates, differences
            low = min((v for v in (mean - below, t_low) if math.isfinite(v)), default=np.nan)
            high = max((v for v in (mean + above, t_high) if math.isfinite(v)), default=np.nan)
            new_low.append(max(floor, low) if math.isfinite(low) else np.nan)
            new_high.append(min(ceiling, high) if math.isfinite(high) else np.nan)
            sds.append(sd)
        out[f"{column}_low"], out[f"{column}_high"] = new_low, new_high
        out.insert(out.columns.get_loc(f"{column}_high") + 1, f"{column}_sd", sds)
    if "within_noise" in out and "gain_low" in out:
        out["within_noise"] = [
            None if not np.isfinite(lo) else bool(lo <= 0 <= hi)
            for lo, hi in zip(out["gain_low"], out["gain_high"], strict=True)
        ]
    return out


def _nanmean(values: np.ndarray) -> Any:
    """Mean over the first axis ignoring NaN; NaN (without a warning) where all are NaN."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _stack(tables: list[pd.DataFrame], column: str) -> np.ndarray | None:
    """(seeds, rows) float array of a numeric column, or None for a column of text."""
    try:
        return np.stack([pd.to_numeric(t[column]).to_numpy(dtype=float) for t in tables])
    except (ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------- verdicts and text


def interval(row: Any, column: str = "accuracy") -> tuple[float, float]:
    """(low, high) of a table row (a Series or a namedtuple)."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    return float(get(f"{column}_low", np.nan)), float(get(f"{column}_high", np.nan))


def order_verdict(higher: tuple[float, float], lower: tuple[float, float]) -> str:
    """A published "A is better than B" read from two intervals: agrees when A's interval lies
    wholly above B's, disagrees when wholly below, inconclusive when they overlap."""
    if not all(math.isfinite(v) for v in (*higher, *lower)):
        return "inconclusive"
    if higher[0] > lower[1]:
        return "agrees"
    if higher[1] < lower[0]:
        return "disagrees"
    return "inconclusive"


def equal_verdict(intervals: list[tuple[float, float]]) -> str:
    """A published "these did about equally": disagrees when two intervals do not overlap;
    otherwise inconclusive (overlapping intervals cannot show equality, only fail to refute it)."""
    finite = [iv for iv in intervals if all(math.isfinite(v) for v in iv)]
    if len(finite) < 2:
        return "inconclusive"
    return "disagrees" if max(lo for lo, _ in finite) > min(hi for _, hi in finite) else "inconclusive"  # fmt: skip


def value_text(value: float, low: float, high: float, digits: int = 1) -> str:
    """'95.2% (94.1–96.0)'."""
    if value is None or not math.isfinite(value):
        return "-"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{100 * value:.{digits}f}%"
    return f"{100 * value:.{digits}f}% ({stats.format_interval(low, high, digits)})"


def row_text(row: Any, column: str = "accuracy", digits: int = 1) -> str:
    """A row's rate with its interval, and mean ± sd when it was averaged over seeds."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    text = value_text(float(get(column)), *interval(row, column), digits)
    sd = get(f"{column}_sd", None)
    if sd is not None and math.isfinite(float(sd)):
        text += f", sd {100 * float(sd):.{digits}f}"
    return text


def gain_text(row: Any, digits: int = 1) -> str:
    """'+1.8 pts (+0.4 to +3.2)' for a row's paired gain over its baseline."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    gain, (low, high) = float(get("gain", np.nan)), interval(row, "gain")
    if not math.isfinite(gain):
        return "-"
    return f"{100 * gain:+.{digits}f} pts ({100 * low:+.{digits}f} to {100 * high:+.{digits}f})"


def comparison_rows(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    """The comparison table: measure, ours, published, verdict, source."""
    return pd.DataFrame(rows, columns=["measure", "ours", "published", "verdict", "source"])
