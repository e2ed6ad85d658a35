"""'Your own data' in Chromium: a zip of small PNGs (one folder per class) dropped on the sidebar's
file uploader becomes the dataset, the URL names it, the charts are drawn on its images, and the
same URL opened in a new tab shows the same view."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import parse_qs, urlparse

import pytest
import torch
from conftest import VIEW, chart_data, wait_idle
from PIL import Image

from kdviz import data

pytestmark = pytest.mark.e2e


def _digits_zip(path, per_class: int = 6) -> None:
    ds = data.load_dataset("digits", "test")
    with zipfile.ZipFile(path, "w") as archive:
        for label in range(10):
            for n, index in enumerate(torch.nonzero(ds.labels == label)[:per_class, 0]):
                buffer = io.BytesIO()
                Image.fromarray(ds.images[int(index), 0].numpy()).save(buffer, format="PNG")
                archive.writestr(f"digits/{label}/{n}.png", buffer.getvalue())


def test_uploading_a_zip_of_images_shows_charts_on_them(server, page, screenshots, tmp_path):
    zip_path = tmp_path / "my-digits.zip"
    _digits_zip(zip_path)
    page.goto(f"{server}/?{VIEW}")
    wait_idle(page)
    page.get_by_text("Your own data").click()
    page.locator(".st-key-own_upload input[type=file]").set_input_files(str(zip_path))
    page.wait_for_function("() => location.search.includes('dataset=folder')", timeout=60_000)
    wait_idle(page)
    spec = parse_qs(urlparse(page.url).query)["dataset"][0]
    assert spec.startswith("folder:") and spec.endswith("/images") and "/uploads/" in spec
    sidebar = page.locator("[data-testid=stSidebar]")
    assert "carved with seed 0" in sidebar.inner_text()
    bars = chart_data(page, "soft_bars")
    teacher = next(t for t in bars if t["name"] == "Teacher, T = 1")
    assert len(teacher["y"]) == 10 and abs(sum(teacher["y"]) - 1) < 1e-5
    strip = chart_data(page, "gallery_strip")
    assert strip is not None  # the upload's own images are shown
    sidebar.screenshot(path=screenshots / "own_data_sidebar.png")
    url = page.url
    other = page.context.new_page()  # the copied link reopens the same view
    other.goto(url)
    wait_idle(other)
    assert parse_qs(urlparse(other.url).query)["dataset"][0] == spec
    assert chart_data(other, "soft_bars") == bars
    other.close()
