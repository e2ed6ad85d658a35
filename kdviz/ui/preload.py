"""Start the browser loading the front-end code of the first page's elements early.

Streamlit's front end fetches each element's JavaScript chunk only when the first element of that
kind arrives: the sidebar's widgets, then the Plotly chunk (~4.7 MB, most of a second to run in
Chromium). kdviz's first script run waits a second or more for torch before it sends any of them,
so app.py sends this small script first: the browser loads the chunks during that wait, and the
page draws as soon as its data arrives.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st

# The chunks of the elements on the first page (chunk files are named ELEMENT.HASH.js); Plotly
# first, the largest. One a newer Streamlit renamed is skipped.
FIRST_PAGE = (
    "PlotlyChart", "Slider", "Selectbox", "Button", "ButtonGroup", "NumberInput", "Checkbox",
    "TextInput", "FileUploader", "ImageList", "Radio",
)  # fmt: skip

# import() rather than <link rel=modulepreload>: it also runs each chunk (Plotly's own set-up).
# The URLs resolve next to the page's entry script, as the front end's own imports do, so the
# browser's module map holds one copy (and --server.baseUrlPath still works).
_SCRIPT = """<script>
(() => {
  if (window.__kdvizPreloaded) return;
  window.__kdvizPreloaded = true;
  const entry = document.querySelector('script[type="module"][src*="static/js/index."]');
  if (entry) CHUNKS.forEach(c => import(new URL("./" + c, entry.src).href).catch(() => {}));
})();
</script>"""


@functools.cache
def chunk_files(stems: tuple[str, ...] = FIRST_PAGE) -> tuple[str, ...]:
    """The file names of these element chunks in this Streamlit install (those found once)."""
    folder = Path(st.__file__).parent / "static" / "static" / "js"
    found = []
    for stem in stems:
        files = list(folder.glob(f"{stem}.*.js"))
        if len(files) == 1:
            found.append(files[0].name)
    return tuple(found)


KEY = "kdviz_preload"


def first_page() -> None:
    """Send the script that starts loading the first page's chunks (nothing if none is found),
    in a hidden container: no gap above the page's title."""
    files = chunk_files()
    if not files:
        return
    # style only, so it takes no space itself; the wrapper is what holds a place in the layout
    st.html(f"<style>:has(> .st-key-{KEY}) {{ display: none; }}</style>")
    with st.container(key=KEY):
        st.html(_SCRIPT.replace("CHUNKS", json.dumps(files)), unsafe_allow_javascript=True)
