"""kdviz web app: routes to the pages in kdviz/ui/ (run with `kdviz app` or `streamlit run app.py`)."""

import streamlit as st

from kdviz.ui import shell

st.set_page_config(page_title="kdviz · dark knowledge explorer", page_icon="🌗", layout="wide")
page = st.navigation(shell.pages())
shell.sidebar()
page.run()
