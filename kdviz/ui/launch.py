"""Start the web app: Streamlit in this process, warmed up while the browser loads the front end."""

from __future__ import annotations

import threading
from pathlib import Path


def _warm_up_app() -> None:
    """Import torch and the pages' modules, and read the default dataset, while the browser
    is still loading the front end: the first page view then starts with all of it in memory."""
    try:
        import kdviz.ui.shell  # noqa: F401  (torch, plotly, pandas, the analysis modules)
        from kdviz.data import load_dataset

        load_dataset("mnist5k", "test")
    except Exception:  # warming up is only an optimisation; the page reports real errors
        pass


def serve(app: Path, port: int, address: str) -> int:
    """Run ``streamlit run APP`` in this process (so the warm-up's imports are the app's)."""
    from streamlit.web import cli as streamlit_cli

    threading.Thread(target=_warm_up_app, name="kdviz-warm-up", daemon=True).start()
    argv = ["run", str(app), "--server.port", str(port), "--server.address", address]
    argv += ["--browser.gatherUsageStats", "false"]
    try:
        streamlit_cli.main(args=argv, prog_name="streamlit", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
