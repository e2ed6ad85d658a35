"""The explorer's start: the warm-up fills the logit cache for the first view, the UI reads the
shipped teacher's logit files instead of computing them, and typed page paths forward."""

from __future__ import annotations

import torch

from kdviz import engine, models
from kdviz.ui import PAGES, cache, launch, shell


def _no_compute(*args, **kwargs):
    raise AssertionError("logits were computed, not read from the cache")


def test_the_ui_reads_the_shipped_teacher_logits(monkeypatch):
    stem = str(models.resolve_checkpoint(shell.DEFAULT_TEACHER))
    expected = engine.dataset_logits(shell.DEFAULT_TEACHER, "mnist5k", "test")  # shipped file
    monkeypatch.setattr("kdviz.logits.compute_logits", _no_compute)
    got = cache.logits(stem, cache.stem_mtime(stem), "mnist5k", "test")
    torch.testing.assert_close(got, expected)


def test_the_warm_up_puts_the_first_view_logits_on_disk(monkeypatch):
    launch._warm_up_app()
    monkeypatch.setattr("kdviz.logits.compute_logits", _no_compute)
    stem = str(models.resolve_checkpoint(shell.DEFAULT_STUDENT))
    logits = cache.logits(stem, cache.stem_mtime(stem), "mnist5k", "test")
    assert logits.shape == (len(cache.source("mnist5k", "test").labels), 10)


def test_typed_paths_forward_to_their_pages():
    aliases = shell.page_aliases()
    assert aliases["soft-targets"] is PAGES[0]  # the default page's own path
    by_file = {spec.file: spec for spec in PAGES}
    assert aliases["teacher_student"] is by_file["teacher_student.py"]
    assert aliases["soft_targets"] is by_file["soft_targets.py"]
    assert aliases["experiments-lab"] is by_file["experiments_page.py"]  # the title, as typed
    real = {shell.ROOT_URL_PATH} | {spec.url_path for spec in PAGES[1:]}
    assert not real & set(aliases)  # an alias never hides a page
