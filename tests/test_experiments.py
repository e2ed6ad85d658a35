"""The experiments lab (kdviz/experiments/): the soft-target transforms, the registry, every
experiment end to end at the tiny size on `digits`, the CLI, background runs and the page."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time

import pandas as pd
import pytest
import torch

from kdviz import experiments as ex
from kdviz import soft, stats
from kdviz.engine import DistillConfig, TrainConfig, fit, train
from kdviz.errors import KdvizError
from kdviz.experiments import estimate
from kdviz.paths import REPO_ROOT
from kdviz.runs import RunStore

TINY = {"dataset": "digits", "size": "tiny", "device": "cpu"}


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> str:
    """A digits teacher trained once for the whole file (seconds)."""
    folder = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDVIZ_HOME", str(folder))
        cfg = TrainConfig(
            dataset="digits",
            arch="mlp-64-64",
            epochs=3,
            batch_size=64,
            lr=3e-3,
            device="cpu",
            out=str(folder / "teacher"),
        )
        assert train(cfg).status == "done"
    return str(folder / "teacher")


pytestmark = pytest.mark.usefixtures("no_stray_workers", "one_torch_thread")


def settings_for(name: str, teacher: str, **changes):
    fields = {f for f in ex.get_experiment(name).settings.__dataclass_fields__}
    extra = {"teacher": teacher} if "teacher" in fields else {}
    return ex.make_settings(name, **TINY, **extra, **changes)


# ---------------------------------------------------------------------------- transforms


def test_top_k_keeps_the_k_largest_probabilities_renormalised():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.5, -1.0, 4.0]])
    for t in (1.0, 4.0):
        probs = soft.soften(ex.top_k_logits(logits, 2), t)  # (N, K)
        full = soft.soften(logits, t)
        assert (probs > 0).sum(-1).tolist() == [2, 2]
        kept = probs > 0
        expected = torch.where(kept, full, 0.0)
        torch.testing.assert_close(probs, expected / expected.sum(-1, keepdim=True))


def test_dkpp_keeps_the_target_probability_and_permutes_the_rest():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=gen) * 3
    labels = torch.randint(0, 10, (64,), generator=gen)
    shuffled = ex.shuffle_non_target(logits, labels, torch.Generator().manual_seed(1))
    for t in (1.0, 4.0):
        p, q = soft.soften(logits, t), soft.soften(shuffled, t)
        rows = torch.arange(64)
        torch.testing.assert_close(q[rows, labels], p[rows, labels])  # target kept
        mask = torch.ones_like(p, dtype=torch.bool)
        mask[rows, labels] = False
        rest_p = p[mask].view(64, 9).sort(-1).values
        rest_q = q[mask].view(64, 9).sort(-1).values
        torch.testing.assert_close(rest_q, rest_p)  # the same values, on other classes
    assert not torch.equal(shuffled, logits)


def test_virtual_teacher_has_equal_non_target_probabilities():
    labels = torch.tensor([0, 3, 9])
    for t in (1.0, 20.0):
        probs = soft.soften(ex.virtual_teacher_logits(labels, 10, 0.9, t), t)
        torch.testing.assert_close(probs[torch.arange(3), labels], torch.full((3,), 0.9))
        others = probs[torch.ones_like(probs, dtype=torch.bool).scatter_(1, labels[:, None], False)]
        torch.testing.assert_close(others, torch.full_like(others, 0.1 / 9))
    with pytest.raises(KdvizError):
        ex.virtual_teacher_logits(labels, 10, 1.0, 4.0)


def test_cwtm_weights_are_the_teacher_max_probability():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    weights = ex.teacher_max_weights(logits)
    torch.testing.assert_close(weights, soft.soften(logits, 1.0).max(-1).values)
    assert weights[0] > weights[1] == pytest.approx(1 / 3)


def test_bias_for_share_matches_the_prior_and_only_raises_the_class():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=gen)
    logits[:, 3] -= 5.0  # class 3 is almost never predicted
    bias = ex.bias_for_share(logits, 3, 0.1)
    assert bias > 0
    share = (ex.shift_class(logits, 3, bias).argmax(-1) == 3).float().mean()
    assert float(share) == pytest.approx(0.1, abs=0.01)
    logits[:, 3] += 50.0  # already over-predicted: the bias is never lowered
    assert ex.bias_for_share(logits, 3, 0.1) == 0.0


def test_dark_structure_is_zero_for_uniform_non_targets():
    labels = torch.tensor([1, 2])
    flat = ex.virtual_teacher_logits(labels, 10, 0.7, 1.0)
    assert ex.dark_structure(flat, labels, 1.0) == pytest.approx(0.0, abs=1e-9)
    peaked = flat.clone()
    peaked[0, 7] += 3.0
    assert ex.dark_structure(peaked, labels, 1.0) > 0.1


def test_fit_transformed_with_the_identity_matches_engine_fit(teacher, tmp_path):
    cfg = DistillConfig(
        dataset="digits",
        arch="mlp-32",
        epochs=2,
        batch_size=128,
        lr=3e-3,
        device="cpu",
        teacher=teacher,
        out=str(tmp_path / "a"),
    )
    reference = fit(cfg, save=False)
    ours = ex.fit_transformed(cfg, teacher_transform=lambda z, _y: z, save=False)
    assert ours.status == "done"
    assert ours.metrics["accuracy"] == pytest.approx(reference.metrics["accuracy"], abs=0.02)
    assert ours.metrics["agreement"] == pytest.approx(reference.metrics["agreement"], abs=0.02)


# ---------------------------------------------------------------------------- registry and settings


def test_registry_holds_the_ten_experiments_and_lists_them_on_a_typo():
    assert ex.list_experiments() == [
        "temperature-sweep",
        "omitted-class",
        "soft-regulariser",
        "label-smoothing",
        "early-stopped-teacher",
        "born-again",
        "soft-target-parts",
        "ensemble-to-one",
        "cross-architecture",
        "miscalibrated-teacher",
    ]
    with pytest.raises(KdvizError, match="born-again") as err:
        ex.get_experiment("born-agian")
    assert "temperature-sweep" in str(err.value)


def test_settings_fill_presets_parse_strings_and_reject_unknown_keys():
    tiny = ex.make_settings("temperature-sweep", size="tiny")
    full = ex.make_settings("temperature-sweep")
    assert tiny.epochs < full.epochs and len(tiny.temperatures) < len(full.temperatures)
    assert full.temperatures == (1.0, 2.0, 2.5, 4.0, 8.0, 20.0)
    parsed = ex.make_settings("temperature-sweep", temperatures="1, 4,20", epochs="3")
    assert parsed.temperatures == (1.0, 4.0, 20.0) and parsed.epochs == 3
    with dataclasses_frozen():
        parsed.epochs = 4
    with pytest.raises(KdvizError, match="temperatures"):
        ex.make_settings("temperature-sweep", temprature=4)
    with pytest.raises(KdvizError, match="size"):
        ex.make_settings("born-again", size="huge")


def dataclasses_frozen():
    import dataclasses

    return pytest.raises(dataclasses.FrozenInstanceError)


# ---------------------------------------------------------------------------- every experiment, tiny


def _check_sweep(r, s):
    assert len(r.table) == len(s.students) * len(s.temperatures)
    assert not r.table.duplicated(["student", "temperature"]).any()
    assert set(r.table["temperature"]) == set(s.temperatures)


def _check_omitted(r, s):
    assert len(r.table) == 4
    for _model, part in r.table.groupby("model"):
        part = part.set_index("stage")
        assert part.loc["after bias", "class_accuracy"] >= part.loc["before bias", "class_accuracy"]
        assert part.loc["after bias", "bias"] >= 0.0
    hard = r.table[(r.table["model"] == "hard labels") & (r.table["stage"] == "before bias")]
    assert float(hard["class_accuracy"].iloc[0]) <= 0.1  # never saw the class, never says it


def test_omitted_class_follows_hintons_protocol_by_default():
    s = ex.make_settings("omitted-class")  # the paper: 2 x 800, T = 20, every 3 left out
    assert (s.student, s.temperature, s.omit_class) == ("mlp-800-800", 20.0, 3)


def _check_regulariser(r, s):
    assert len(r.table) == 4
    small = r.table[r.table["fraction"] < 1]["examples"]
    assert (small < r.table[r.table["fraction"] == 1]["examples"].min()).all()


def _check_smoothing(r, s):
    assert list(r.table["model"]).count("teacher") == len(s.smoothings)
    sims = r.extras["similarity"]
    assert len(sims) == len(s.smoothings) * 10 * 10
    rows = sims.groupby(["smoothing", "true_class"])["probability"].sum()
    assert rows.to_numpy() == pytest.approx(1.0, abs=1e-4)  # each row is a distribution
    assert (r.table["dark_structure"].dropna() >= 0).all()


def _check_early(r, s):
    assert len(r.table) == len(s.checkpoints) + 1
    assert r.table["teacher_epoch"].dropna().tolist() == list(s.checkpoints)


def _check_born_again(r, s):
    assert len(r.table) == s.generations + 2
    assert r.table["generation"].dropna().tolist() == list(range(s.generations + 1))


def _check_parts(r, s):
    assert r.table["variant"].tolist() == [
        "hard labels",
        "full soft targets",
        f"top-{s.top_k} soft targets",
        "DKPP",
        "CWTM",
        "virtual teacher",
    ]


def _check_ensemble(r, s):
    assert len(r.table) == s.members + 2
    ens = r.table[r.table["kind"] == "ensemble"]
    assert float(ens["agreement_with_ensemble"].iloc[0]) == pytest.approx(1.0)


def _check_cross(r, s):
    teachers = r.table[r.table["model"] == "teacher"]
    pairs = r.table[r.table["model"] == "student"]
    assert len(teachers) == 3 and len(pairs) == 3 * len(s.students)
    assert set(pairs["student_family"]) == {"MLP", "CNN"}
    r_values = pairs["structure"].dropna()
    assert len(r_values) == len(pairs) and ((r_values >= -1) & (r_values <= 1)).all()
    assert pairs["gain_low"].notna().all()  # every pair has its paired interval
    sims = r.extras["teacher_similarity"]  # not "similarity": the page draws that one per smoothing
    assert len(sims) == 3 * 10 * 10 and set(sims["teacher"]) == set(teachers["teacher"])


def _check_miscalibrated(r, s):
    variants = len(s.scales) + 2  # the logit scales, label smoothing, overtraining
    assert len(r.table) == 3 * variants + 1
    assert set(r.table["condition"]) == {"fixed T", "best T (val)", "teacher temperature-scaled", "hard labels"}  # fmt: skip
    best = r.table[r.table["condition"] == "best T (val)"]
    assert set(best["temperature"]) <= set(s.temperatures) | {s.temperature}
    assert len(r.extras["grid"]) == variants * len(set(s.temperatures) | {s.temperature})


CHECKS = {
    "temperature-sweep": _check_sweep,
    "omitted-class": _check_omitted,
    "soft-regulariser": _check_regulariser,
    "label-smoothing": _check_smoothing,
    "early-stopped-teacher": _check_early,
    "born-again": _check_born_again,
    "soft-target-parts": _check_parts,
    "ensemble-to-one": _check_ensemble,
    "cross-architecture": _check_cross,
    "miscalibrated-teacher": _check_miscalibrated,
}


# 18 runs, ~16 s; tests/test_experiments_limits.py runs a trimmed one unmarked
SLOW_TINY = {"miscalibrated-teacher"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TINY else n
        for n in ex.list_experiments()
    ],
)
def test_every_experiment_runs_tiny_and_stores_a_sane_result(name, teacher):
    assert set(CHECKS) == set(ex.list_experiments())
    s = settings_for(name, teacher)
    store = RunStore()
    result = ex.run_experiment(name, s, store=store)

    assert isinstance(result.table, pd.DataFrame) and len(result.table) > 0
    assert list(result.comparison.columns) == ["measure", "ours", "published", "verdict", "source"]
    assert set(result.comparison["verdict"]) <= {*stats.VERDICTS, "-"}
    assert (result.comparison["verdict"] != "-").any()  # at least one claim is judged
    assert len(result.comparison) >= 1 and result.comparison["published"].str.len().gt(0).all()
    assert len(re.findall(r"[.!?](\s|$)", result.notice)) >= 2
    for column in result.table:
        if any(w in column for w in ("accuracy", "agreement", "share", "prior")):
            values = pd.to_numeric(result.table[column], errors="coerce").dropna()
            assert ((values >= 0) & (values <= 1)).all(), column
    CHECKS[name](result, s)

    runs = [store.get(i) for i in result.run_ids]
    assert runs and all(r.status == "done" and r.parent_id == result.experiment_run for r in runs)
    parent = store.get(result.experiment_run)
    assert parent.status == "done" and parent.kind == "experiment" and parent.role == "experiment"
    table_ids = {v for c in result.table if "run_id" in c for v in result.table[c] if v}
    assert table_ids <= set(result.run_ids)

    again = ex.load_result(result.experiment_run)
    assert again.run_ids == result.run_ids and again.notice == result.notice
    pd.testing.assert_frame_equal(
        again.table, result.table, check_dtype=False, check_exact=False, atol=1e-8
    )
    assert (parent.folder / "table.csv").read_text() == result.table_csv()
    fig = ex.result_figure(result)
    assert len(fig.data) >= 1
    assert any(tr.error_y is not None and tr.error_y.array is not None for tr in fig.data)
    assert (result.table["accuracy_low"] <= result.table["accuracy"] + 1e-12).all()
    assert (result.table["accuracy"] <= result.table["accuracy_high"] + 1e-12).all()
    assert ex.markdown_table(result.comparison).count("\n") == len(result.comparison) + 1


# ---------------------------------------------------------------------------- intervals and seeds


def test_wilson_and_paired_columns_match_kdviz_stats():
    from kdviz.experiments import intervals as iv

    table = pd.DataFrame({"accuracy": [0.9, 0.95], "run_id": ["a", "b"], "hard_run_id": ["a", "a"]})
    out = iv.add_wilson(table, "accuracy", 200)
    assert (out["accuracy_low"][1], out["accuracy_high"][1]) == stats.wilson_interval(190, 200)
    gen = torch.Generator().manual_seed(0)
    right = {"a": torch.rand(200, generator=gen) < 0.9, "b": torch.rand(200, generator=gen) < 0.95}
    out = iv.add_paired_gain(out, right.__getitem__)
    ref = stats.paired_difference(right["b"], right["a"])
    assert math.isnan(out["gain"][0]) and out["within_noise"][0] is None  # the baseline itself
    assert (out["gain"][1], out["gain_low"][1], out["gain_high"][1]) == (
        ref.diff,
        ref.low,
        ref.high,
    )
    assert out["within_noise"][1] == ref.within_noise
    assert list(out.columns)[-2:] == ["run_id", "hard_run_id"]  # ids stay last


def test_aggregate_seeds_averages_and_takes_the_wider_interval():
    from kdviz.experiments import intervals as iv

    def seed_table(acc: float, half: float) -> pd.DataFrame:
        return pd.DataFrame(
            {"model": ["m"], "accuracy": [acc], "accuracy_low": [acc - half],
             "accuracy_high": [acc + half], "run_id": [f"r{acc}"]}
        )  # fmt: skip

    accs = [0.90, 0.92, 0.94]
    out = iv.aggregate_seeds([seed_table(a, 0.03) for a in accs])
    mean, sd, t_low, t_high = stats.mean_sd_interval(accs)
    assert out["accuracy"][0] == pytest.approx(mean) and out["accuracy_sd"][0] == pytest.approx(sd)
    # the seeds' t-interval (+/- 0.0497) is wider than the test images' (+/- 0.03): it wins
    assert (out["accuracy_low"][0], out["accuracy_high"][0]) == pytest.approx((t_low, t_high))
    assert out["model"][0] == "m" and out["run_id"][0] == "r0.9"
    out = iv.aggregate_seeds([seed_table(a, 0.2) for a in (0.5, 0.5)])  # no spread: Wilson wins
    assert (out["accuracy_low"][0], out["accuracy_high"][0]) == pytest.approx((0.3, 0.7))
    one = seed_table(0.9, 0.03)
    assert iv.aggregate_seeds([one]) is one
    # a condition column is kept exact, so a compare can look its rows up by value (3 seeds of
    # label-smoothing once failed: the mean of three 0.1s is 0.10000000000000002)
    conditions = [seed_table(a, 0.03).assign(smoothing=[0.1]) for a in accs]
    out = iv.aggregate_seeds(conditions).set_index("smoothing")
    assert out.loc[0.1, "accuracy"] == pytest.approx(mean)


def test_seeds_repeat_the_experiment_and_average_its_table():
    store = RunStore()
    s = ex.make_settings("born-again", **TINY, arch="mlp-16", seeds=2)
    result = ex.run_experiment("born-again", s, store=store)
    assert result.settings["seeds"] == 2 and len(result.run_ids) == 2 * (s.generations + 1)
    gen0 = [store.get(i) for i in result.run_ids if "generation-0" in store.get(i).name]
    assert len(gen0) == 2 and {r.config["seed"] for r in gen0} == {0, 1000}
    mean = sum(r.metrics["accuracy"] for r in gen0) / 2
    assert result.table["accuracy"][0] == pytest.approx(mean, abs=1e-6)
    assert "accuracy_sd" in result.table and "gain_sd" in result.table
    text = ex.format_result(result)
    assert "Mean over 2 seeds (0, 1000)" in text and "smoke test" in text
    assert ex.make_settings("born-again").seeds == 3 and ex.make_settings("born-again", size="tiny").seeds == 1  # fmt: skip
    with pytest.raises(KdvizError, match="seeds"):
        ex.make_settings("born-again", seeds=0)


# ---------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kdviz")
    ex.add_experiment_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_prints_one_json_object_and_lists_experiments(capsys):
    args = _parse(["experiment", "born-again", "--dataset", "digits", "--size", "tiny",
                   "--device", "cpu", "--set", "arch=mlp-16", "--json"])  # fmt: skip
    assert ex.run_experiment_cli(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "born-again" and out["settings"]["arch"] == "mlp-16"
    assert len(out["run_ids"]) == 2 and out["table"]["columns"][0] == "generation"

    assert ex.run_experiment_cli(_parse(["experiment"])) == 0
    assert "omitted-class" in capsys.readouterr().out
    with pytest.raises(KdvizError, match="choose one of"):
        ex.run_experiment_cli(_parse(["experiment", "nope"]))
    with pytest.raises(KdvizError, match="KEY=VALUE"):
        ex.run_experiment_cli(_parse(["experiment", "born-again", "--set", "arch"]))


def test_cli_precision_reaches_every_training_of_the_experiment(capsys):
    args = _parse(["experiment", "born-again", "--dataset", "digits", "--size", "tiny",
                   "--device", "cpu", "--precision", "bf16", "--set", "arch=mlp-16", "--json"])  # fmt: skip
    assert ex.run_experiment_cli(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["precision"] == "bf16"
    store = RunStore()
    runs = [store.get(i) for i in out["run_ids"]]
    assert runs and all(r.config["precision"] == "bf16" for r in runs)
    assert all(math.isfinite(r.metrics["accuracy"]) for r in runs)
    assert ex.make_settings("born-again").precision == "auto"
    with pytest.raises(KdvizError, match="precision"):
        ex.make_settings("born-again", precision="fp8")


# ---------------------------------------------------------------------------- background runs


def _wait(store: RunStore, run_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex.reap()
        run = store.get(run_id)
        if not run.active:
            return run
        time.sleep(0.2)
    raise AssertionError(f"experiment {run_id} did not finish: {store.get(run_id).message}")


def test_background_experiment_runs_in_its_own_process_and_stores_its_result(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = RunStore()
    s = ex.make_settings("born-again", **TINY, arch="mlp-16")
    run = ex.start_experiment("born-again", s, store=store)
    assert run.kind == "experiment" and run.status in ("queued", "running") and run.pid
    assert run.pid != os.getpid()
    done = _wait(store, run.id)
    assert done.status == "done", (run.folder / "worker.log").read_text()
    result = ex.load_result(run.id)
    assert len(result.run_ids) == 2 and ex.find_results("born-again", store)[0].id == run.id
    assert all(store.get(i).source == "app" for i in result.run_ids)


def test_cancelling_an_experiment_stops_it_between_or_inside_runs():
    store = RunStore()
    s = ex.make_settings("ensemble-to-one", **TINY, arch="mlp-16")
    parent = {}

    def echo(line: str) -> None:  # the first training has started: cancel from "elsewhere"
        if line.startswith("[1/") and line.endswith("..."):
            runs = store.list_runs(kind="experiment", limit=1)
            parent["id"] = runs[0].id
            ex.cancel_experiment(runs[0].id, store)

    with pytest.raises(ex.Cancelled):
        ex.run_experiment("ensemble-to-one", s, store=store, echo=echo)
    run = store.get(parent["id"])
    assert run.status == "cancelled" and not run.active
    children = [r for r in store.group(run.id) if r.id != run.id]
    assert len(children) <= 2 and all(not r.active for r in children)
    assert not (run.folder / "result.json").exists()


# ---------------------------------------------------------------------------- the page


def test_page_shows_a_stored_result_and_starts_an_experiment(monkeypatch):
    from streamlit.testing.v1 import AppTest

    store = RunStore()
    s = ex.make_settings("born-again", **TINY, arch="mlp-16")
    result = ex.run_experiment("born-again", s, store=store)
    at = AppTest.from_file(str(REPO_ROOT / "kdviz/ui/experiments_page.py"), default_timeout=60)
    at.query_params["experiment"] = result.experiment_run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="exp_name").value == "born-again"
    assert len(at.dataframe) >= 2  # our numbers beside the published ones, and the table
    assert any("What to notice" in str(i.value) for i in at.info)
    assert any("smoke test" in str(w.value) for w in at.warning)  # tiny says what it is
    assert "verdict" in at.dataframe[0].value.columns

    # "Re-run with other settings" puts the stored settings into the form ...
    at.button(key=f"exp_{result.experiment_run}_load").click().run()
    assert at.radio(key="exp_born-again_size").value == "tiny"
    assert at.text_input(key="exp_born-again_tiny_arch").value == "mlp-16"
    # no "default value and Session State" clash: the only warning is the smoke-test label
    assert [w for w in at.warning if "smoke test" not in str(w.value)] == []
    # ... and Start launches the experiment with what the form holds
    started = {}
    monkeypatch.setattr(ex, "start_experiment", lambda n, st_, store=None: _fake(started, n, st_))

    # settings that differ from the preset get their own estimate (the loaded ones do: mlp-16 on
    # digits), which follows each edit: one more generation is one more training
    def edited() -> str:
        (text,) = [str(c.value) for c in at.caption if "With these settings" in str(c.value)]
        return text

    assert f"({len(estimate.trainings('born-again', s))} trainings" in edited()
    at.number_input(key="exp_born-again_tiny_generations").set_value(2).run()
    more = ex.make_settings("born-again", **TINY, arch="mlp-16", generations=2)
    assert (
        len(estimate.trainings("born-again", more)) == len(estimate.trainings("born-again", s)) + 1
    )
    assert f"({len(estimate.trainings('born-again', more))} trainings" in edited()
    at.button(key="exp_born-again_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    name, settings = started["args"]
    assert name == "born-again" and settings.generations == 2 and settings.arch == "mlp-16"
    assert settings.dataset == "digits" and settings.size == "tiny"


def _fake(record: dict, name: str, settings):
    record["args"] = (name, settings)
    store = RunStore()
    return store.create_run({"kind": "experiment", "experiment": name}, status="running")
