"""Experiment 6, born-again networks (Furlanello et al. 2018): students with the teacher's own
architecture, generation after generation, and the ensemble of the generations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from kdviz import engine, stats
from kdviz.data import load_dataset
from kdviz.engine import TrainConfig
from kdviz.experiments import intervals as iv
from kdviz.experiments.registry import (
    FURLANELLO,
    ExperimentResult,
    make_result,
    register_comparison,
    register_experiment,
)
from kdviz.experiments.runner import Runner, ensemble_card
from kdviz.experiments.settings import (
    Settings,
    common_fields,
    distill_config,
)


@dataclass(frozen=True)
class BornAgainSettings(Settings):
    arch: str = "mlp-300-300"  # every generation has this architecture
    generations: int | None = None  # students after generation 0: tiny 1, full 3
    temperature: float = 4.0
    alpha: float = 0.9

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"generations": 1},
        "full": {"generations": 3},
    }


@register_experiment(
    "born-again",
    title="Born-again networks",
    settings=BornAgainSettings,
    paper=FURLANELLO,
    question="Can a student with the teacher's own architecture beat its teacher, generation after generation?",
)
def born_again(s: BornAgainSettings, runner: Runner) -> ExperimentResult:
    runner.plan(1 + s.generations)
    gen0 = TrainConfig(**common_fields(s), arch=s.arch)
    runs = [runner.train(gen0, f"{s.arch} generation 0 (hard labels)", role="teacher")]
    for g in range(1, s.generations + 1):
        cfg = distill_config(s, s.arch, runs[-1].checkpoint, seed=s.seed + g)
        runs.append(runner.train(cfg, f"{s.arch} generation {g}"))
    test = load_dataset(s.dataset, s.eval_split)
    rows = []
    for g, run in enumerate(runs):
        rows.append(
            {
                "generation": g,
                "model": f"generation {g}" + (" (hard labels)" if g == 0 else ""),
                "accuracy": run.metrics["accuracy"],
                "nll": run.metrics["nll"],
                "ece": run.metrics["ece"],
                "agreement_with_teacher": run.metrics.get("agreement"),
                "run_id": run.run_id,
                "hard_run_id": runs[0].run_id,  # generation 0: the hard-label baseline
            }
        )
    stem = ensemble_card(runner, [r.checkpoint for r in runs], s.dataset, "born-again-ensemble")
    metrics = engine.logit_metrics(runner.logits(str(stem), s.dataset, s.eval_split), test.labels)
    rows.append(
        {
            "generation": float("nan"),
            "model": f"ensemble of generations 0-{s.generations}",
            "accuracy": metrics["accuracy"],
            "nll": metrics["nll"],
            "ece": metrics["ece"],
            "agreement_with_teacher": None,
            "run_id": "",
            "hard_run_id": "",
        }
    )
    table = pd.DataFrame(rows)
    notice = (
        "Every generation has the same architecture and the same data; the only new thing it "
        "gets is the previous generation's soft targets, so any gain over generation 0 is dark "
        "knowledge acting on an equal. Watch whether the gain shrinks after the first generation "
        "and whether averaging the generations adds more than any single one."
    )
    return make_result(s, "born-again", table, notice)


@register_comparison("born-again")
def compare(s: BornAgainSettings, table: pd.DataFrame) -> pd.DataFrame:
    """Furlanello et al.'s two claims: the best born-again generation's paired gain over
    generation 0, and the ensemble's interval against the best generation's."""
    gens = table.dropna(subset=["generation"])
    best = gens.iloc[1:].loc[gens.iloc[1:]["accuracy"].idxmax()]
    ens = table[table["generation"].isna()].iloc[0]
    return iv.comparison_rows(
        [
            ("generation 0 -> best born-again generation", f"{iv.row_text(gens.iloc[0])} -> {iv.row_text(best)}: {iv.gain_text(best)}", "born-again students beat their teachers (CIFAR-100, DenseNets)", stats.verdict(iv.interval(best, "gain"), iv.BEATS), FURLANELLO),
            ("ensemble of all generations", iv.row_text(ens), "BAN ensembles better still: 15.5% single / 14.9% ensemble error, CIFAR-100", iv.order_verdict(iv.interval(ens), iv.interval(best)), FURLANELLO),
        ]
    )  # fmt: skip
