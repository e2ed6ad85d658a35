"""Experiments lab: one-click reproductions of what dark knowledge is and when it helps.

Each classic experiment is a registered function ``(settings, runner) -> ExperimentResult`` in a
module of its own (temperature_sweep.py, omitted_class.py, ...): its settings dataclass, the runs it
trains, its table, its comparison with the paper and its chart, read top to bottom. A new one is
added by writing one such module and importing it below. The settings have a ``size`` ("tiny":
seconds, a smoke test; "full": the README numbers); the runner (runner.py) trains every model as a
recorded run of the run store, so each result keeps the ids of its runs; registry.py holds the
registry and the stored result (CSV + JSON in the experiment's own run folder).

    kdviz experiment omitted-class --dataset mnist5k        # foreground, with progress
    start_experiment("omitted-class")                       # background process (the web page)
"""

from __future__ import annotations

from kdviz.experiments.registry import (
    Experiment,
    ExperimentResult,
    format_result,
    get_experiment,
    list_experiments,
    load_result,
    make_settings,
    markdown_table,
    register_experiment,
    register_figure,
    result_figure,
    seeds_text,
)
from kdviz.experiments.runner import (
    Cancelled,
    Runner,
    add_experiment_parser,
    cancel_experiment,
    find_results,
    reap,
    run_experiment,
    run_experiment_cli,
    run_experiment_worker,
    start_experiment,
)
from kdviz.experiments.settings import SIZES, SMOKE_TEST, Settings, TeacherSettings
from kdviz.experiments.transforms import (
    bias_for_share,
    dark_structure,
    fit_transformed,
    shift_class,
    shuffle_non_target,
    teacher_max_weights,
    top_k_logits,
    virtual_teacher_logits,
)

# the experiments register themselves on import, in the order of the README table
from kdviz.experiments import temperature_sweep  # noqa: E402, F401  isort: skip
from kdviz.experiments import omitted_class  # noqa: E402, F401  isort: skip
from kdviz.experiments import soft_regulariser  # noqa: E402, F401  isort: skip
from kdviz.experiments import label_smoothing  # noqa: E402, F401  isort: skip
from kdviz.experiments import early_stopped_teacher  # noqa: E402, F401  isort: skip
from kdviz.experiments import born_again  # noqa: E402, F401  isort: skip
from kdviz.experiments import soft_target_parts  # noqa: E402, F401  isort: skip
from kdviz.experiments import ensemble_to_one  # noqa: E402, F401  isort: skip
from kdviz.experiments import cross_architecture  # noqa: E402, F401  isort: skip
from kdviz.experiments import miscalibrated_teacher  # noqa: E402, F401  isort: skip

__all__ = [
    "SIZES",
    "SMOKE_TEST",
    "Cancelled",
    "Experiment",
    "ExperimentResult",
    "Runner",
    "Settings",
    "TeacherSettings",
    "add_experiment_parser",
    "bias_for_share",
    "cancel_experiment",
    "dark_structure",
    "find_results",
    "fit_transformed",
    "format_result",
    "get_experiment",
    "list_experiments",
    "load_result",
    "make_settings",
    "markdown_table",
    "reap",
    "register_experiment",
    "register_figure",
    "result_figure",
    "run_experiment",
    "run_experiment_cli",
    "run_experiment_worker",
    "seeds_text",
    "shift_class",
    "shuffle_non_target",
    "start_experiment",
    "teacher_max_weights",
    "top_k_logits",
    "virtual_teacher_logits",
]
