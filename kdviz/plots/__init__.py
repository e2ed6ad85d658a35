"""Tidy DataFrames (from kdviz.analysis) -> plotly.graph_objects.Figure. Never imports streamlit.

Every figure has a title, axis labels and hover text, and names classes by name. Category axes
are declared as such, so class names like "3" are not read as numbers.

Figures are written as Plotly JSON (dicts) and wrapped without Plotly's per-property validation:
validating costs ~10 ms a figure, a third of the explorer's 30 ms budget for a rerun. The tests
rebuild every figure with validation on, so a misspelt property still fails there.

One module per subject: ``style`` (colours, template, layout and axis helpers), ``temperature``
(one image's soft targets across T), ``images`` (thumbnail strips), ``matrices`` (heat maps, the
similarity graph, the embedding map) and ``comparison`` (teacher against student). Every public
name is re-exported here, so callers write ``plots.matrix_heatmap(...)``.
"""

from kdviz.plots.comparison import class_accuracy_bars, dkd_bars, reliability_diagram
from kdviz.plots.images import image_strip, label_strip
from kdviz.plots.matrices import embedding_scatter, matrix_heatmap, similarity_graph
from kdviz.plots.style import (
    DIFFERENCE_SCALE,
    MIN_LOG_PROBABILITY,
    MODEL_COLORS,
    MODEL_LABELS,
    NCKD_COLOR,
    PROBABILITY_SCALE,
    REFERENCE_COLOR,
    STUDENT_COLOR,
    T_AXIS_RANGE,
    T_MARK_COLOR,
    T_TICKS,
    TCKD_COLOR,
    TEACHER_COLOR,
    TEMPLATE,
    class_colors,
    model_color,
    model_label,
)
from kdviz.plots.temperature import (
    mark_temperature,
    set_soft_targets,
    soft_target_animation,
    soft_target_bars,
    softness_curves,
    temperature_curves,
)

__all__ = [
    "DIFFERENCE_SCALE",
    "MIN_LOG_PROBABILITY",
    "MODEL_COLORS",
    "MODEL_LABELS",
    "NCKD_COLOR",
    "PROBABILITY_SCALE",
    "REFERENCE_COLOR",
    "STUDENT_COLOR",
    "T_AXIS_RANGE",
    "T_MARK_COLOR",
    "T_TICKS",
    "TCKD_COLOR",
    "TEACHER_COLOR",
    "TEMPLATE",
    "class_accuracy_bars",
    "class_colors",
    "dkd_bars",
    "embedding_scatter",
    "image_strip",
    "label_strip",
    "mark_temperature",
    "matrix_heatmap",
    "model_color",
    "model_label",
    "reliability_diagram",
    "set_soft_targets",
    "similarity_graph",
    "soft_target_animation",
    "soft_target_bars",
    "softness_curves",
    "temperature_curves",
]
