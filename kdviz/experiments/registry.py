"""The experiments' registry and results: ``@register_experiment`` entries, their settings parsed
from strings, the ExperimentResult (tidy table, comparison with the papers, notice) with its CSV +
JSON storage, the Markdown and the chart of a result."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdviz.errors import KdvizError
from kdviz.experiments.settings import SEED_STEP, SMOKE_TEST, Settings
from kdviz.runs import run_folder

RESULT_JSON = "result.json"  # the whole result, in the experiment's run folder
TABLE_CSV = "table.csv"  # its tidy table
COMPARISON_CSV = "comparison.csv"  # our numbers beside the published ones

HINTON = "Hinton, Vinyals & Dean 2015 (arXiv:1503.02531)"
MULLER = "Müller, Kornblith & Hinton 2019 (arXiv:1906.02629)"
CHO = "Cho & Hariharan 2019 (arXiv:1910.01348)"
FURLANELLO = "Furlanello et al. 2018 (arXiv:1805.04770)"
YUAN = "Yuan et al. 2020 (arXiv:1909.11723)"

# ---------------------------------------------------------------------------- results


@dataclass
class ExperimentResult:
    """What an experiment returns: its tidy table, our numbers beside the published ones, two
    sentences on what to notice, and the ids of the runs it trained."""

    name: str  # registry name, e.g. "omitted-class"
    title: str
    settings: dict[str, Any]  # the resolved settings (dataclasses.asdict)
    table: pd.DataFrame  # tidy: one row per model / condition
    comparison: pd.DataFrame  # columns: measure, ours, published, verdict, source
    notice: str  # two sentences: what to notice
    run_ids: list[str] = field(default_factory=list)  # every training run it used
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)  # e.g. similarity matrices
    experiment_run: str = ""  # the experiment's own run id (its folder holds the files)
    seconds: float = 0.0
    teacher: str = ""  # the teacher checkpoint distilled, for experiments given one

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> null); what ``--json`` prints and result.json holds."""
        return {
            "name": self.name,
            "title": self.title,
            "settings": self.settings,
            "table": _frame_to_json(self.table),
            "comparison": _frame_to_json(self.comparison),
            "notice": self.notice,
            "run_ids": list(self.run_ids),
            "extras": {k: _frame_to_json(v) for k, v in self.extras.items()},
            "experiment_run": self.experiment_run,
            "seconds": self.seconds,
            "teacher": self.teacher,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            settings=data.get("settings", {}),
            table=_frame_from_json(data["table"]),
            comparison=_frame_from_json(data["comparison"]),
            notice=data.get("notice", ""),
            run_ids=list(data.get("run_ids", [])),
            extras={k: _frame_from_json(v) for k, v in data.get("extras", {}).items()},
            experiment_run=data.get("experiment_run", ""),
            seconds=float(data.get("seconds", 0.0)),
            teacher=data.get("teacher", ""),
        )

    def table_csv(self) -> str:
        return self.table.to_csv(index=False)

    def save(self, folder: str | Path) -> Path:
        """Write result.json, table.csv, comparison.csv and one CSV per extra into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / TABLE_CSV, self.table_csv())
        write_text(folder / COMPARISON_CSV, self.comparison.to_csv(index=False))
        for key, frame in self.extras.items():
            write_text(folder / f"{key}.csv", frame.to_csv(index=False))
        write_text(folder / RESULT_JSON, json.dumps(self.to_dict(), indent=1, default=str))
        return folder / RESULT_JSON


def _frame_to_json(frame: pd.DataFrame) -> dict[str, Any]:
    return json.loads(frame.to_json(orient="split", index=False, double_precision=10))


def _frame_from_json(data: dict[str, Any]) -> pd.DataFrame:
    return numeric_columns(pd.DataFrame(data.get("data", []), columns=data.get("columns", [])))


def numeric_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of numbers with gaps (None) become float columns with NaN, not objects."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object and len(values):
            present = [v for v in values if v is not None and v == v]
            if present and all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in present
            ):
                frame[column] = pd.to_numeric(values.astype(object).where(values.notna(), np.nan))
    return frame


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_result(run_id_or_folder: str | Path) -> ExperimentResult:
    """The stored result of an experiment run (its id, or its folder)."""
    ref = str(run_id_or_folder)
    folder = Path(ref) if os.sep in ref or Path(ref).is_dir() else run_folder(ref)
    path = folder / RESULT_JSON
    if not path.is_file():
        raise KdvizError(
            f"The experiment run {ref!r} has no stored result ({path}); it may not have finished."
        )
    return ExperimentResult.from_dict(json.loads(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------- registry

ExperimentFn = Callable[[Any, Any], ExperimentResult]  # (settings, runner.Runner) -> result
FigureFn = Callable[[Any, pd.DataFrame], None]  # draws a result table into a plotly Figure
CompareFn = Callable[[Any, pd.DataFrame], pd.DataFrame]  # (settings, table) -> comparison


@dataclass(frozen=True)
class Experiment:
    """One registry entry."""

    name: str  # lowercase, kebab-case: the CLI's NAME
    title: str
    fn: ExperimentFn
    settings: type[Settings]
    paper: str  # where the published numbers come from
    question: str  # one line: what the experiment asks

    def make_settings(self, **overrides: Any) -> Settings:
        """Settings with ``overrides`` (strings are parsed, as ``--set key=value`` gives them)."""
        fields = {f.name: f for f in dataclasses.fields(self.settings)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise KdvizError(
                f"Experiment {self.name!r} has no setting {', '.join(unknown)}; "
                f"it takes: {', '.join(fields)}."
            )
        values = {k: _coerce(fields[k], v) for k, v in overrides.items()}
        return self.settings(**values).resolved()


_EXPERIMENTS: dict[str, Experiment] = {}
_FIGURES: dict[str, FigureFn] = {}  # experiments with their own chart; the rest get bars
_COMPARISONS: dict[str, CompareFn] = {}  # experiment -> compare(settings, table)


def register_experiment(
    name: str, *, title: str, settings: type[Settings], paper: str, question: str
) -> Callable[[ExperimentFn], ExperimentFn]:
    """Register ``fn(settings, runner) -> ExperimentResult`` under ``name``."""

    def decorator(fn: ExperimentFn) -> ExperimentFn:
        if name in _EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is already registered")
        _EXPERIMENTS[name] = Experiment(name, title, fn, settings, paper, question)
        return fn

    return decorator


def register_figure(name: str) -> Callable[[FigureFn], FigureFn]:
    """Register ``draw(fig, table)``: the traces of experiment ``name``'s chart (see result_figure)."""

    def decorator(fn: FigureFn) -> FigureFn:
        _FIGURES[name] = fn
        return fn

    return decorator


def register_comparison(name: str) -> Callable[[CompareFn], CompareFn]:
    """Register ``compare(settings, table) -> comparison``: experiment ``name``'s numbers beside
    the published ones, with a verdict from the intervals. It runs after the intervals are added
    and the seeds averaged, so it reads only the final table."""

    def decorator(fn: CompareFn) -> CompareFn:
        _COMPARISONS[name] = fn
        return fn

    return decorator


def compare(name: str, settings: Any, table: pd.DataFrame) -> pd.DataFrame:
    """The registered comparison of experiment ``name`` on ``table`` (empty when there is none)."""
    fn = _COMPARISONS.get(name)
    if fn is None:
        return pd.DataFrame(columns=["measure", "ours", "published", "verdict", "source"])
    return fn(settings, table)


def list_experiments() -> list[str]:
    """Registered experiment names, in the order of the issue (and of the README table)."""
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The registry entry; an unknown name raises KdvizError listing the valid ones."""
    key = str(name).strip().lower()
    if key not in _EXPERIMENTS:
        raise KdvizError(
            f"Unknown experiment {name!r}; choose one of {', '.join(list_experiments())}."
        )
    return _EXPERIMENTS[key]


def make_settings(name: str, **overrides: Any) -> Settings:
    """The resolved settings of experiment ``name`` with ``overrides``."""
    return get_experiment(name).make_settings(**overrides)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Parse a string setting by the field's annotation; other values pass unchanged."""
    ann = str(f.type)
    if not isinstance(value, str):
        return tuple(value) if "tuple" in ann and isinstance(value, list) else value
    text = value.strip()
    if "None" in ann and text.lower() in ("", "none", "default"):
        return None
    try:
        if "tuple" in ann:
            parts = [p for p in re.split(r"[,\s]+", text) if p]
            kind = float if "float" in ann else int if "int" in ann else str
            return tuple(kind(p) for p in parts)
        if ann.startswith("bool"):
            return text.lower() in ("1", "true", "yes", "on")
        if ann.startswith("int"):
            return int(text)
        if ann.startswith("float"):
            return float(text)
    except ValueError as err:
        raise KdvizError(
            f"Setting {f.name}={value!r} is not a valid {ann}; fix the value."
        ) from err
    return text


# ---------------------------------------------------------------------------- building a result


def pct(value: float, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def make_result(
    s: Settings, name: str, table: pd.DataFrame, notice: str, **kw: Any
) -> ExperimentResult:
    """An experiment's result for one seed; the runner adds the intervals, averages the seeds and
    fills the comparison (the experiment's registered ``compare``)."""
    spec = get_experiment(name)
    return ExperimentResult(
        name=name,
        title=spec.title,
        settings=s.to_dict(),
        table=numeric_columns(table.reset_index(drop=True)),
        comparison=pd.DataFrame(),
        notice=notice,
        **kw,
    )


# ---------------------------------------------------------------------------- charts


def result_figure(result: ExperimentResult):
    """A plotly Figure of an experiment's table (one chart per experiment; never calls st): the
    experiment's registered figure, else one bar per model."""
    import plotly.graph_objects as go

    t = result.table
    fig = go.Figure()
    draw = _FIGURES.get(result.name)
    if draw is not None:
        draw(fig, t)
    else:  # born-again, soft-target-parts, ensemble-to-one: one bar per model
        x = t["variant"] if "variant" in t else t["model"]
        fig.add_bar(x=x, y=t["accuracy"], name="accuracy", marker_color=COLORS[0], error_y=error_bars(t))  # fmt: skip
    fig.update_layout(
        title=result.title,
        yaxis_title=fig.layout.yaxis.title.text or "test accuracy",
        yaxis_tickformat=".1%",
        barmode="group",
        height=380,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    _zoom_accuracy_axis(fig)
    return fig


COLORS = ("#1f6fb4", "#e8710a", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def error_bars(part: pd.DataFrame, column: str = "accuracy") -> dict[str, Any] | None:
    """Plotly ``error_y`` for ``column`` from its _low / _high interval columns (None without)."""
    low, high = f"{column}_low", f"{column}_high"
    if low not in part or high not in part:
        return None
    up = (part[high] - part[column]).fillna(0.0).clip(lower=0.0)
    down = (part[column] - part[low]).fillna(0.0).clip(lower=0.0)
    return {"type": "data", "symmetric": False, "array": up.tolist(), "arrayminus": down.tolist()}


def _zoom_accuracy_axis(fig) -> None:
    """Accuracies differ by a few points: start the y axis near the smallest value (error bars
    included)."""
    values = []
    for tr in fig.data:
        ys = list(tr.y) if tr.y is not None else []
        bars = getattr(tr, "error_y", None)
        up = list(bars.array) if bars is not None and bars.array is not None else [0.0] * len(ys)
        down = list(bars.arrayminus) if bars is not None and bars.arrayminus is not None else up
        for y, u, d in zip(ys, up, down, strict=False):
            if y == y:
                values += [y - d, y + u]
    if values:
        lo, hi = min(values), max(values)
        pad = max(0.01, 0.1 * (hi - lo))
        fig.update_yaxes(range=[max(0.0, lo - pad), min(1.0, hi + pad)])


# ---------------------------------------------------------------------------- Markdown


def format_result(result: ExperimentResult) -> str:
    """The result as Markdown: comparison, table, what to notice, where it is stored."""
    lines = [
        f"## {result.title}",
        "",
        *([f"**{SMOKE_TEST}.**", ""] if result.settings.get("size") == "tiny" else []),
        f"{seeds_text(result.settings)} 95% intervals: Wilson for accuracies, Newcombe's paired "
        "interval for gains over the hard-label baseline; verdicts come from the intervals.",
        "",
        markdown_table(result.comparison),
        "",
        markdown_table(result.table.drop(columns=[c for c in result.table if "run_id" in c])),
        "",
        f"What to notice: {result.notice}",
        "",
        f"{len(result.run_ids)} runs in {result.seconds:.0f} s; result in "
        f"{run_folder(result.experiment_run) if result.experiment_run else '-'}",
    ]
    return "\n".join(lines)


def seeds_text(settings: dict[str, Any]) -> str:
    """'Mean over 3 seeds (0, 1000, 2000).' or 'One seed (0).'"""
    seeds, seed = int(settings.get("seeds") or 1), int(settings.get("seed") or 0)
    if seeds == 1:
        return f"One seed ({seed})."
    return (
        f"Mean over {seeds} seeds ({', '.join(str(seed + SEED_STEP * i) for i in range(seeds))})."
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; accuracies and rates as percentages, other floats to 3 places."""

    def cell(column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, bool | np.bool_):
            return "yes" if value else "no"
        if isinstance(value, float):
            rate = any(w in column for w in ("accuracy", "agreement", "error", "share", "prior", "gain", "fraction"))  # fmt: skip
            return f"{100 * value:.1f}%" if rate else f"{value:.3g}"
        return str(value).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = [
        "| " + " | ".join(cell(str(c), v) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])
