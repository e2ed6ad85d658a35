"""The two experiments on the limits of dark knowledge (kdviz/experiments/cross_architecture.py and
miscalibrated_teacher.py): the structure measure against numpy, logit scaling against ECE, the
comparisons and charts on hand-made tables, and a trimmed miscalibrated-teacher run end to end (the
full tiny presets of both run in tests/test_experiments.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kdviz import experiments as ex
from kdviz import soft
from kdviz.experiments import cross_architecture as ca
from kdviz.experiments import miscalibrated_teacher as mt
from kdviz.paths import REPO_ROOT
from kdviz.runs import RunStore

TINY = {"dataset": "digits", "size": "tiny", "device": "cpu"}
pytestmark = pytest.mark.usefixtures("no_stray_workers", "one_torch_thread")


# ---------------------------------------------------------------------------- structure


def test_structure_correlation_is_numpy_corrcoef_of_the_off_diagonal_entries():
    a = np.array(
        [
            [0.90, 0.05, 0.03, 0.02],
            [0.10, 0.70, 0.15, 0.05],
            [0.01, 0.20, 0.75, 0.04],
            [0.30, 0.02, 0.08, 0.60],
        ]  # fmt: skip
    )
    b = np.array(
        [
            [0.80, 0.12, 0.02, 0.06],
            [0.05, 0.85, 0.07, 0.03],
            [0.02, 0.30, 0.60, 0.08],
            [0.10, 0.01, 0.04, 0.85],
        ]  # fmt: skip
    )
    off = ~np.eye(4, dtype=bool)
    expected = np.corrcoef(a[off], b[off])[0, 1]
    assert ca.structure_correlation(a, b) == pytest.approx(expected, abs=1e-12)
    assert ca.structure_correlation(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected)
    assert ca.structure_correlation(a, 3 * a + 1) == pytest.approx(1.0)  # scale-free
    assert ca.structure_correlation(a, -a) == pytest.approx(-1.0)
    changed = b.copy()
    np.fill_diagonal(changed, [0.1, 0.2, 0.3, 0.4])  # the diagonal is accuracy, not structure
    assert ca.structure_correlation(a, changed) == pytest.approx(expected, abs=1e-12)
    gap = b.copy()
    gap[2] = np.nan  # a class without images drops out
    keep = off & ~np.isnan(gap)
    assert ca.structure_correlation(a, gap) == pytest.approx(np.corrcoef(a[keep], gap[keep])[0, 1])  # fmt: skip
    assert math.isnan(ca.structure_correlation(a, np.full((4, 4), 0.25)))  # constant: undefined
    with pytest.raises(ValueError, match="K x K"):
        ca.structure_correlation(a, b[:3, :3])


def test_similarity_at_is_the_mean_soft_target_per_class():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 4, generator=gen) * 3
    labels = torch.arange(40) % 4
    got = ca.similarity_at(logits, labels, 2.0)
    probs = torch.softmax(logits.double() / 2.0, dim=-1)
    for c in range(4):
        torch.testing.assert_close(got[c], probs[labels == c].mean(0))


def test_families_of_architectures_and_of_the_shipped_ensemble():
    assert [ca.arch_family(a) for a in ("mlp-70-70", "lenet", "resnet20", "cnn-wide")] == ["MLP", "CNN", "CNN", "CNN"]  # fmt: skip
    assert ca.arch_family("torchvision:resnet18") == "imported"
    family, arch = ca.card_family("mnist5k-teacher")  # shipped: an ensemble of 3 CNNs
    assert family == "CNN" and arch.startswith("ensemble of 3")


# ---------------------------------------------------------------------------- calibration


def calibrated_logits(n: int = 20000, k: int = 5, seed: int = 0):
    """Logits whose labels are drawn from their own softmax: calibrated by construction."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * 2.0
    labels = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    return logits, labels


def test_logit_scaling_makes_the_teacher_over_and_under_confident():
    logits, labels = calibrated_logits()
    same = soft.ece(logits, labels)
    assert same < 0.02 and abs(mt.confidence_gap(logits, labels)) < 0.02
    sharp = mt.scale_logits(4.0)(logits, labels)
    torch.testing.assert_close(sharp, 4.0 * logits)
    flat = mt.scale_logits(0.25)(logits, labels)
    assert soft.accuracy(sharp, labels) == soft.accuracy(logits, labels)  # the ranking is kept
    # over-confident: more confidence than accuracy; under-confident: less; both worse calibrated
    conf = lambda z: torch.softmax(z.double(), -1).max(-1).values.mean().item()  # noqa: E731
    acc = soft.accuracy(logits, labels)
    assert conf(sharp) > acc + 0.1 and mt.confidence_gap(sharp, labels) == pytest.approx(conf(sharp) - acc)  # fmt: skip
    assert conf(flat) < acc - 0.1 and mt.confidence_gap(flat, labels) < -0.1
    assert soft.ece(sharp, labels) > same + 0.1 and soft.ece(flat, labels) > same + 0.1
    # temperature scaling finds the factor again and undoes it
    assert soft.calibration_temperature(sharp, labels) == pytest.approx(4.0, rel=0.05)
    t_star = soft.calibration_temperature(flat, labels)
    assert t_star == pytest.approx(0.25, rel=0.05)
    assert soft.ece(flat / t_star, labels) < 0.02


# ---------------------------------------------------------------------------- comparisons and charts


def _with_intervals(frame: pd.DataFrame, half: float = 0.01) -> pd.DataFrame:
    frame = frame.copy()
    for col in ("accuracy", "gain"):
        if col in frame:
            frame[f"{col}_low"], frame[f"{col}_high"] = frame[col] - half, frame[col] + half
    return frame


def test_cross_architecture_comparison_reads_verdicts_from_the_intervals():
    def pair(teacher, fam, t_acc, student, s_fam, acc, gain, r):
        return {"model": "student", "teacher": teacher, "teacher_family": fam, "teacher_accuracy": t_acc,  # noqa: E501
                "student": student, "student_family": s_fam, "accuracy": acc, "gain": gain,
                "structure": r, "structure_hard": 0.1}  # fmt: skip

    def teacher(label, fam, acc):
        return {"model": "teacher", "teacher": label, "teacher_family": fam, "teacher_accuracy": acc,  # noqa: E501
                "student": "", "student_family": "", "accuracy": acc, "gain": np.nan}  # fmt: skip

    table = _with_intervals(
        pd.DataFrame(
            [
                teacher("CNN: ens", "CNN", 0.99),
                teacher("MLP: big", "MLP", 0.985),  # intervals overlap: similar accuracy
                pair("CNN: ens", "CNN", 0.99, "lenet", "CNN", 0.98, 0.03, 0.9),
                pair("MLP: big", "MLP", 0.97, "lenet", "CNN", 0.95, 0.00, 0.5),
                pair("CNN: ens", "CNN", 0.99, "mlp-70-70", "MLP", 0.93, 0.02, 0.6),
                pair("MLP: big", "MLP", 0.97, "mlp-70-70", "MLP", 0.96, 0.05, 0.8),
            ]
        )
    )
    s = ex.make_settings("cross-architecture", size="tiny")
    comp = ca.compare(s, table).set_index("measure")
    rows = {m.split(":")[0] + ("/acc" if "most accurate" in m else ""): r for m, r in comp.iterrows()}  # fmt: skip
    assert rows["lenet"]["verdict"] == "agrees"  # same family +3 vs +0, intervals apart
    assert rows["mlp-70-70"]["verdict"] == "agrees"  # MLP teacher +5 vs CNN +2
    assert rows["lenet/acc"]["verdict"] == "disagrees"  # the most accurate teacher taught best
    assert rows["mlp-70-70/acc"]["verdict"] == "agrees"  # the less accurate MLP taught better
    beats = comp[comp.index.str.startswith("pairs")].iloc[0]
    assert beats["ours"].startswith("3 of 4") and beats["verdict"] == "inconclusive"
    structure = comp[comp.index.str.startswith("structure")].iloc[0]
    assert structure["ours"].startswith("0.85 vs 0.55")
    # a much weaker MLP teacher: family and accuracy are confounded, so no verdict either way
    table.loc[table["teacher"] == "MLP: big", ["accuracy", "accuracy_low", "accuracy_high"]] = [0.90, 0.89, 0.91]  # fmt: skip  # noqa: E501
    confounded = ca.compare(s, table).iloc[0]
    assert confounded["verdict"] == "inconclusive" and "confounded" in confounded["ours"]


def test_cross_architecture_chart_has_a_bar_group_per_student_and_the_teachers():
    table = _with_intervals(
        pd.DataFrame(
            {
                "model": ["teacher", "student", "student, hard labels", "student", "student, hard labels"],  # noqa: E501
                "teacher": ["CNN: ens", "CNN: ens", ca.HARD, "CNN: ens", ca.HARD],
                "student": ["", "lenet", "lenet", "mlp-70-70", "mlp-70-70"],
                "student_family": ["", "CNN", "CNN", "MLP", "MLP"],
                "accuracy": [0.99, 0.97, 0.95, 0.94, 0.93],
                "structure": [np.nan, 0.91, np.nan, 0.75, np.nan],
            }
        )
    )  # fmt: skip
    result = ex.ExperimentResult("cross-architecture", "Cross", {}, table, pd.DataFrame(), "")
    fig = ex.result_figure(result)
    bars = [tr for tr in fig.data if tr.type == "bar"]
    assert [tr.name for tr in bars] == ["student lenet (CNN)", "student mlp-70-70 (MLP)"]
    assert list(bars[0].text) == ["r 0.91", ""] and list(bars[0].x) == ["CNN: ens", ca.HARD]
    assert bars[0].error_y.array is not None
    diamonds = [tr for tr in fig.data if tr.type == "scatter"]
    assert len(diamonds) == 1 and list(diamonds[0].y) == [0.99]


def _misc_table() -> pd.DataFrame:
    rows = []
    for variant, group, ece, accs in (
        ("logits x 0.25", "logit scale", 0.30, (0.90, 0.95, 0.95)),
        ("logits x 1", "logit scale", 0.02, (0.95, 0.95, 0.95)),
        ("logits x 4", "logit scale", 0.10, (0.85, 0.95, 0.95)),
        ("label smoothing 0.1", "training", 0.05, (0.93, 0.92, 0.94)),
        ("150 epochs", "training", 0.04, (0.94, 0.90, 0.94)),
    ):
        for condition, acc in zip((mt.FIXED, mt.BEST, mt.SCALED), accs, strict=True):
            scaled = condition == mt.SCALED
            rows.append({"variant": variant, "group": group, "teacher_ece": 0.02 if scaled else ece,
                         "t_star": 2.0, "condition": condition, "temperature": 4.0, "accuracy": acc,
                         "ece": 0.03 if scaled else ece})  # fmt: skip
    rows.append({"variant": "none", "group": "", "teacher_ece": np.nan, "t_star": np.nan, "condition": mt.HARD,  # noqa: E501
                 "temperature": np.nan, "accuracy": 0.92, "ece": 0.04})  # fmt: skip
    table = _with_intervals(pd.DataFrame(rows))
    table["ece_low"], table["ece_high"] = table["ece"] - 0.01, table["ece"] + 0.01
    return table


def test_miscalibrated_comparison_answers_with_the_worst_teachers():
    s = ex.make_settings("miscalibrated-teacher", size="full")
    comp = mt.compare(s, _misc_table())
    calibration, accuracy = comp.iloc[0], comp.iloc[1]
    assert calibration["measure"].startswith("answer, calibration") and "logits x 0.25" in calibration["measure"]  # fmt: skip
    assert calibration["ours"].startswith("0.300 (0.290–0.310) -> 0.030 (0.020–0.040)")
    assert calibration["verdict"] == "agrees"  # the student's ECE interval falls below
    assert accuracy["measure"].startswith("answer, accuracy") and "logits x 4" in accuracy["measure"]  # fmt: skip
    assert accuracy["verdict"] == "agrees"  # 85% -> 95%, intervals apart: recovered
    same_t = comp[comp["measure"].str.startswith("best T")].iloc[0]
    assert same_t["verdict"] == "inconclusive"  # 95%, 95%, 95%: overlapping, cannot refute
    smooth = comp[comp["measure"].str.contains("label smoothing")].iloc[0]
    assert smooth["verdict"] == "agrees"  # 95% vs 92% (half-width 1 pt): apart
    long = comp[comp["measure"].str.contains("150 epochs")].iloc[0]
    assert long["verdict"] == "agrees" and long["source"] == ex.get_experiment("early-stopped-teacher").paper  # fmt: skip
    worse = _misc_table()
    worse.loc[(worse["variant"] == "logits x 4") & (worse["condition"] == mt.SCALED), ["accuracy", "accuracy_low", "accuracy_high"]] = [0.70, 0.69, 0.71]  # fmt: skip  # noqa: E501
    assert mt.compare(s, worse).iloc[1]["verdict"] == "disagrees"  # scaling made it worse


def test_ece_interval_is_the_percentile_bootstrap_of_soft_ece():
    logits, labels = calibrated_logits(n=300, k=4, seed=2)
    logits = logits * 3  # over-confident, so the ECE is well away from 0
    low, high = mt.ece_interval(logits, labels, n_boot=200, seed=5)
    idx = np.random.default_rng(5).integers(0, 300, size=(200, 300))  # the same resamples
    eces = [soft.ece(logits[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in idx]
    assert (low, high) == pytest.approx(tuple(np.percentile(eces, [2.5, 97.5])), abs=1e-9)
    assert low < soft.ece(logits, labels) < high
    same = torch.tensor([[2.0, 0.0, 0.0]] * 50)  # every resample is the sample itself
    assert mt.ece_interval(same, torch.zeros(50, dtype=torch.long)) == pytest.approx((soft.ece(same, torch.zeros(50, dtype=torch.long)),) * 2)  # fmt: skip  # noqa: E501


def test_miscalibrated_chart_plots_student_error_and_ece_against_teacher_ece():
    result = ex.ExperimentResult("miscalibrated-teacher", "Misc", {}, _misc_table(), pd.DataFrame(), "")  # fmt: skip
    fig = ex.result_figure(result)
    names = [tr.name for tr in fig.data]
    assert names == [f"student {w}, {c}" for c in (mt.FIXED, mt.BEST, mt.SCALED) for w in ("error", "ECE")]  # fmt: skip
    fixed = fig.data[0]
    assert list(fixed.x) == sorted(fixed.x)  # by teacher ECE
    assert fixed.y[list(fixed.text).index("logits x 4")] == pytest.approx(0.15)  # 1 - accuracy
    assert fixed.error_y.array is not None and fig.layout.xaxis.type == "log"
    assert fig.data[1].error_y.array is not None  # the student's ECE has its interval too


# ---------------------------------------------------------------------------- end to end, trimmed


def test_trimmed_miscalibrated_teacher_runs_end_to_end():
    """Two logit scales and no trained miscalibration, so it is fast; the full tiny preset runs
    (marked slow) in tests/test_experiments.py."""
    s = ex.make_settings(
        "miscalibrated-teacher", **TINY, scales="1,4", smoothing="0", overtrain_to="0"
    )
    store = RunStore()
    result = ex.run_experiment("miscalibrated-teacher", s, store=store)
    t = result.table
    assert len(t) == 2 * 3 + 1 and set(t["variant"]) == {"logits x 1", "logits x 4", "none"}
    for column in ("teacher_ece", "teacher_gap", "t_star", "accuracy_low", "gain_low", "ece_low", "val_accuracy"):  # fmt: skip
        assert column in t
    fixed = t[t["condition"] == mt.FIXED].set_index("variant")
    assert fixed.loc["logits x 4", "teacher_gap"] > fixed.loc["logits x 1", "teacher_gap"]
    scaled = t[t["condition"] == mt.SCALED].set_index("variant")
    ends = {0.05, 20.0}
    if not ({round(v, 6) for v in scaled["t_star"]} & ends):  # T*(4z) = 4 T*(z): one teacher
        assert scaled.loc["logits x 1", "run_id"] == scaled.loc["logits x 4", "run_id"]
        assert scaled.loc["logits x 4", "t_star"] == pytest.approx(4 * scaled.loc["logits x 1", "t_star"], rel=1e-3)  # fmt: skip
    grid = result.extras["grid"]
    best = t[t["condition"] == mt.BEST].set_index("variant")
    for variant, part in grid.groupby("variant"):  # the best T is the best on val, not on test
        assert best.loc[variant, "val_accuracy"] == part["val_accuracy"].max()
        assert best.loc[variant, "temperature"] in set(part["temperature"])
    assert len(result.comparison) >= 2 and (result.comparison["verdict"] != "-").all()
    assert all(store.get(i).status == "done" for i in result.run_ids)
    fig = ex.result_figure(result)
    assert any(tr.error_y is not None and tr.error_y.array is not None for tr in fig.data)


def test_the_lab_page_shows_the_result_and_offers_both_forms(monkeypatch):
    """The registry is all the page needs: the stored result, its chart, and each new form."""
    from streamlit.testing.v1 import AppTest

    s = ex.make_settings("miscalibrated-teacher", **TINY, scales="4", smoothing="0", overtrain_to="0", temperatures="4")  # fmt: skip
    result = ex.run_experiment("miscalibrated-teacher", s, store=RunStore())
    at = AppTest.from_file(str(REPO_ROOT / "kdviz/ui/experiments_page.py"), default_timeout=60)
    at.query_params["experiment"] = result.experiment_run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="exp_name").value == "miscalibrated-teacher"
    assert any("smoke test" in str(w.value) for w in at.warning)
    assert "verdict" in at.dataframe[0].value.columns
    assert "teacher_ece" in at.dataframe[1].value.columns

    started = {}

    def fake_start(name, settings, store=None):
        started["args"] = (name, settings)
        return RunStore().create_run({"kind": "experiment", "experiment": name}, status="running")

    monkeypatch.setattr(ex, "start_experiment", fake_start)
    at.selectbox(key="exp_name").set_value("cross-architecture").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="exp_cross-architecture_size").set_value("tiny").run()
    assert at.text_input(key="exp_cross-architecture_tiny_students").value == "mlp-70-70, lenet"
    at.text_input(key="exp_cross-architecture_tiny_students").set_value("mlp-16, lenet")
    at.button(key="exp_cross-architecture_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    name, settings = started["args"]
    assert name == "cross-architecture" and settings.students == ("mlp-16", "lenet")
    assert isinstance(settings, ca.CrossArchSettings) and settings.size == "tiny"


@pytest.mark.parametrize(
    ("name", "changes", "words"),
    [
        ("miscalibrated-teacher", {"scales": "-1"}, "scales"),
        ("miscalibrated-teacher", {"scales": "0,1"}, "scales"),
        ("miscalibrated-teacher", {"temperatures": "0,4"}, "temperatures"),
        ("cross-architecture", {"students": ""}, "students"),
    ],
)
def test_settings_a_user_gets_wrong_fail_in_one_sentence_before_training(name, changes, words):
    from kdviz.errors import KdvizError

    store = RunStore()
    s = ex.make_settings(name, **TINY, **changes)
    with pytest.raises(KdvizError, match=words):
        ex.run_experiment(name, s, store=store)
    runs = store.list_runs()
    assert [r.status for r in runs] == ["failed"]  # only the experiment's own row, nothing trained


def test_the_lab_page_shows_a_stored_cross_architecture_result():
    """A result saved as the runner saves it (hand-made table, so nothing trains) shows with its
    chart and tables; its teacher matrices must not be mistaken for label-smoothing ones."""
    from streamlit.testing.v1 import AppTest

    s = ex.make_settings("cross-architecture", **TINY)
    table = _with_intervals(
        pd.DataFrame(
            {
                "model": ["teacher", "student", "student, hard labels"],
                "teacher": ["CNN: ens", "CNN: ens", ca.HARD],
                "teacher_family": ["CNN", "CNN", ""],
                "teacher_accuracy": [0.99, 0.99, np.nan],
                "student": ["", "lenet", "lenet"],
                "student_family": ["", "CNN", "CNN"],
                "accuracy": [0.99, 0.97, 0.95],
                "structure": [np.nan, 0.91, np.nan],
                "structure_hard": [np.nan, 0.5, np.nan],
                "gain": [np.nan, 0.02, np.nan],
            }
        )
    )  # fmt: skip
    matrix = torch.full((10, 10), 0.01) + 0.9 * torch.eye(10)
    result = ex.ExperimentResult(
        "cross-architecture", "Cross-architecture transfer", s.to_dict(), table,
        ca.compare(s, table), "Two sentences. Here.",
        extras={"teacher_similarity": ca._similarity_frame({"CNN: ens": matrix}, tuple("0123456789"))},  # noqa: E501
    )  # fmt: skip
    store = RunStore()
    run = store.create_run({"kind": "experiment", "experiment": "cross-architecture", "settings": s.to_dict()}, status="running")  # fmt: skip  # noqa: E501
    result.experiment_run = run.id
    result.save(run.folder)
    store.finish(run.id, "done", "ok")
    at = AppTest.from_file(str(REPO_ROOT / "kdviz/ui/experiments_page.py"), default_timeout=60)
    at.query_params["experiment"] = run.id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="exp_name").value == "cross-architecture"
    assert "structure" in at.dataframe[1].value.columns
