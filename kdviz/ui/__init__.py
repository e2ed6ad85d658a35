"""The Streamlit explorer: one module per page, plus the shared shell (sidebar, caches, widgets).

Only this package and app.py import streamlit. To add a page, write ``kdviz/ui/NAME.py`` (its body
runs under ``if __name__ == "__main__":``, which is how Streamlit executes a page file) and append
a ``PageSpec`` to ``PAGES``; the first entry is the default page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UI_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageSpec:
    """One page of the app."""

    file: str  # page module file name in kdviz/ui/
    title: str  # shown in the navigation
    url_path: str  # the URL's path: http://host/URL_PATH?T=4...
    icon: str = ""  # a Material icon, ":material/NAME:"

    @property
    def path(self) -> Path:
        return UI_DIR / self.file


PAGES: list[PageSpec] = [
    PageSpec("soft_targets.py", "Soft targets", "soft-targets", ":material/thermostat:"),
    PageSpec("class_similarity.py", "Class similarity", "class-similarity", ":material/hub:"),
    PageSpec(
        "teacher_student.py", "Teacher vs student", "teacher-vs-student", ":material/compare:"
    ),
    PageSpec("compress.py", "Compress", "compress", ":material/compress:"),
    PageSpec("distill.py", "Distill", "distill", ":material/model_training:"),
    PageSpec("runs_page.py", "Runs", "runs", ":material/history:"),
    PageSpec("experiments_page.py", "Experiments lab", "experiments", ":material/science:"),
    PageSpec("lesson.py", "Present", "present", ":material/co_present:"),
]
