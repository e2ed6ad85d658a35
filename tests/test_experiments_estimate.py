"""The Experiments lab's time estimate (kdviz/experiments/estimate.py): each experiment's trainings
counted right, costs read from a run store, the estimate within a factor of two of the stored
figures of every experiment at full size, and a tiny experiment run here in the background training
exactly the runs the estimate counts.
"""

from __future__ import annotations

import collections
import time

import pytest

from kdviz import experiments as ex
from kdviz.engine import TrainConfig
from kdviz.experiments import estimate
from kdviz.runs import RunStore

# Every experiment at full size, one seed, mnist5k with the shipped teacher, one torch thread, on
# the 2-core x86_64 CPU shared with other work: (training runs, seconds of the experiment run).
# Measured by `scripts/run_experiments.py --threads 1` (KDVIZ_HOME=/work/exp_home, 2026-11-30
# 03:07-03:23 UTC); the rows' started/finished and their child runs in that run store.
MEASURED_FULL = {
    "temperature-sweep": (14, 101),
    "omitted-class": (2, 45),
    "soft-regulariser": (4, 26),
    "label-smoothing": (5, 85),
    "early-stopped-teacher": (6, 73),
    "born-again": (4, 49),
    "soft-target-parts": (6, 65),
    "ensemble-to-one": (4, 72),
    "cross-architecture": (10, 562),
    "miscalibrated-teacher": (35, 522),
}


def test_every_experiment_has_a_plan_and_a_stored_measurement():
    assert set(estimate.PLANS) == set(ex.list_experiments()) == set(MEASURED_FULL)


@pytest.mark.parametrize("name", list(MEASURED_FULL))
def test_full_size_counts_every_training_and_is_within_a_factor_two(name):
    runs, seconds = MEASURED_FULL[name]
    settings = ex.make_settings(name, size="full", seeds=1)
    plan = estimate.trainings(name, settings)
    assert len(plan) == runs
    guess, count = estimate.estimate_seconds(name, settings)
    assert count == runs
    assert seconds / 2 <= guess <= seconds * 2, f"{name}: {guess:.0f} s estimated, {seconds} s ran"
    three, _ = estimate.estimate_seconds(name, ex.make_settings(name, size="full", seeds=3))
    assert three == pytest.approx(3 * (guess - estimate.EXPERIMENT_S) + estimate.EXPERIMENT_S)


def test_the_plans_follow_the_settings(monkeypatch):
    sweep = estimate.trainings(
        "temperature-sweep",
        ex.make_settings("temperature-sweep", size="full", seeds=2, temperatures="1,4"),
    )
    assert collections.Counter(t.arch for t in sweep) == {"mlp-300-300": 6, "mlp-30-30": 6}
    # without a shipped teacher one is trained first, for each seed
    monkeypatch.setattr("kdviz.experiments.runner.shipped_teacher", lambda _dataset: None)
    plan = estimate.trainings("omitted-class", ex.make_settings("omitted-class", size="tiny"))
    assert [(t.arch, t.epochs) for t in plan] == [("lenet", 2), ("mlp-800-800", 2)] + [
        ("mlp-800-800", 2)
    ]
    monkeypatch.undo()
    small, *_ = estimate.trainings(
        "soft-regulariser", ex.make_settings("soft-regulariser", size="full")
    )
    assert (small.epochs, small.images) == (100, round(4000 * 0.03))
    cross = estimate.trainings("cross-architecture", ex.make_settings("cross-architecture"))
    assert cross[0].augment == "jitter" and cross[1].arch == "resnet8"


def test_costs_measured_from_the_run_store_replace_the_table():
    store = RunStore()
    cfg = TrainConfig(dataset="mnist5k", arch="mlp-300-300", epochs=10)
    for seconds in (20.0, 30.0, 100.0):  # the median is the 30 s run
        run = store.create_run(cfg.to_dict(), status="running")
        store.finish(run.id, "done", "ok")
        store.update(run.id, started=1000.0, finished=1000.0 + seconds)
    short = store.create_run({**cfg.to_dict(), "epochs": 2}, status="running")  # too short
    store.finish(short.id, "done", "ok")
    store.update(short.id, started=1000.0, finished=1900.0)

    costs = estimate.measured_costs(store.list_runs())
    per_epoch = (30.0 - estimate.TRAINING_S) / 10 - estimate.EPOCH_S  # oracle, by hand
    assert costs == {"mlp-300-300": pytest.approx(1000 * per_epoch / (4000 + 500 / 3))}
    settings = ex.make_settings("born-again", size="full", seeds=1)
    slow, _ = estimate.estimate_seconds("born-again", settings, costs)
    table, _ = estimate.estimate_seconds("born-again", settings)
    # four trainings of 60 epochs, each epoch as long as one of the 30 s run's (~0.15 s in the table)
    epoch = (30.0 - estimate.TRAINING_S) / 10
    assert slow == pytest.approx(estimate.EXPERIMENT_S + 4 * (estimate.TRAINING_S + 60 * epoch))
    assert slow > 10 * table


def test_the_page_rescales_an_earlier_run_to_the_seeds_asked():
    from kdviz.ui import experiments_page as page

    store = RunStore()
    spec = ex.get_experiment("born-again")
    one_seed = spec.make_settings(size="full", seeds=1)
    run = store.create_run(
        {"kind": "experiment", "experiment": "born-again", "settings": one_seed.to_dict()},
        status="running",
    )
    store.finish(run.id, "done", "ok")
    store.update(run.id, started=1000.0, finished=1050.0)
    seconds, text = page.estimate_text(store, spec, "full")  # 3 seeds by default
    assert seconds == pytest.approx(150.0) and "earlier run here" in text
    other = spec.make_settings(size="full", seeds=1, generations=1).to_dict()
    store.update(
        run.id, config={"kind": "experiment", "experiment": "born-again", "settings": other}
    )
    seconds, text = page.estimate_text(store, spec, "full")  # other settings: not comparable
    assert "simple model of its 12 trainings, 3 seeds" in text


@pytest.mark.usefixtures("no_stray_workers")
@pytest.mark.parametrize(
    "name", ["born-again", pytest.param("soft-regulariser", marks=pytest.mark.slow)]
)
def test_a_tiny_background_run_trains_what_the_estimate_counts(name):
    """The experiment as the page starts it (its own process); timed as the page times it."""
    settings = ex.make_settings(name, size="tiny", dataset="mnist5k", device="cpu")
    store = RunStore()
    run = ex.start_experiment(name, settings, store=store)
    deadline = time.monotonic() + 120
    while store.get(run.id).active and time.monotonic() < deadline:
        time.sleep(0.2)
    done = store.get(run.id)
    assert done.status == "done", done.message
    took = done.finished - done.started
    children = [r for r in store.list_runs() if r.parent_id == run.id]
    plan = estimate.trainings(name, settings)
    assert sorted((r.config["arch"], r.config["epochs"]) for r in children) == sorted(
        (t.arch, t.epochs) for t in plan
    )
    guess, _ = estimate.estimate_seconds(name, settings)
    # how long it took depends on the machine and its load: reported, never asserted (timing
    # targets live in benchmarks/); the count of trainings and their sizes above is the test
    print(f"{name}: {guess:.1f} s estimated, {took:.1f} s ran")
    assert guess > 0
