"""kdviz web app: routes to the pages in kdviz/ui/ (run with `kdviz app` or `streamlit run app.py`)."""

import streamlit as st

from kdviz.ui import preload

st.set_page_config(page_title="kdviz · dark knowledge explorer", page_icon="🌗", layout="wide")
# Sent before `shell` is imported: that waits for torch (a second or two on a first run), during
# which the browser loads the first page's front-end code.
preload.first_page()

from kdviz.ui import shell  # noqa: E402

page = st.navigation(shell.pages())
shell.sidebar()
page.run()
