"""Start the web app: Streamlit in this process, warmed up while the browser loads the front end."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from kdviz.errors import KdvizError
from kdviz.paths import DATA_ROOTS_ENV  # not kdviz.data: that imports torch (~2 s)

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")
CONFIG_FILE = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def wait_for_server(port: int, address: str, limit: float = 30.0) -> bool:
    """Whether the server at ``address``:``port`` accepts connections within ``limit`` seconds."""
    host = "127.0.0.1" if address in ("", "0.0.0.0") else "::1" if address == "::" else address
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _warm_up_app(port: int | None = None, address: str = "127.0.0.1") -> None:
    """Import torch and the pages' modules, read the default dataset and put the default view's
    logits in the on-disk cache, while the browser is still loading the front end: the first
    page view then starts with all of it in memory or on disk.

    With ``port``, it starts once the server listens: the import holds the GIL most of its ~2 s,
    and run alongside Streamlit's own start it delayed the server and the first chart more than
    it gained (measured with benchmarks/start_speed.py)."""
    if port is not None:
        wait_for_server(port, address)
    try:
        import kdviz.ui.soft_targets  # noqa: F401  (torch, plotly, pandas, the analysis modules)
        from kdviz.data import load_dataset
        from kdviz.engine import dataset_logits
        from kdviz.ui import shell

        load_dataset(shell.DEFAULT_DATASET, shell.DEFAULT_SPLIT)
        for name in (shell.DEFAULT_TEACHER, shell.DEFAULT_STUDENT):
            dataset_logits(name, shell.DEFAULT_DATASET, shell.DEFAULT_SPLIT)
    except Exception:  # warming up is only an optimisation; the page reports real errors
        pass


def config_flags(file: Path = CONFIG_FILE) -> list[str]:
    """The repo's .streamlit/config.toml as `--section.option value` flags.

    Streamlit reads that file only from the current directory; as flags the settings (no
    tracebacks in the page, upload size, XSRF, CORS, no file watcher) hold wherever kdviz starts.
    """
    try:
        import tomllib  # Python 3.11+, as the Streamlit kdviz uses needs anyway
    except ImportError:  # pragma: no cover
        return []
    try:
        settings = tomllib.loads(file.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    flags = []
    for section, options in settings.items():
        for name, value in options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{name}", text]
    return flags


def restrict_data(address: str, folders: list[str]) -> str | None:
    """Set $KDVIZ_DATA_ROOTS for the app (and the runs it starts); returns what to tell the user.

    --data DIR names the folders the browser may read (besides KDVIZ_HOME). Without it an app on
    localhost reads any folder its user types, and one bound beyond localhost only KDVIZ_HOME.
    """
    roots = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise KdvizError(f"--data {folder}: {path} is not a folder; give a folder of datasets.")
        roots.append(str(path.resolve()))
    if roots:
        os.environ[DATA_ROOTS_ENV] = os.pathsep.join(roots)
        return f"the app may read data under KDVIZ_HOME and {', '.join(roots)}"
    if address not in LOCAL_ADDRESSES:
        os.environ[DATA_ROOTS_ENV] = ""
        return (
            "serving beyond localhost, the app reads data only under KDVIZ_HOME "
            "(name more folders with --data DIR)"
        )
    return None


def serve(app: Path, port: int, address: str, data: list[str] | None = None) -> int:
    """Run ``streamlit run APP`` in this process (so the warm-up's imports are the app's)."""
    note = restrict_data(address, data or [])
    from streamlit.web import cli as streamlit_cli

    if note:
        print(f"kdviz: {note}", flush=True)
    warm_up = threading.Thread(
        target=_warm_up_app, args=(port, address), name="kdviz-warm-up", daemon=True
    )
    warm_up.start()
    argv = ["run", str(app), *config_flags()]
    argv += ["--server.port", str(port), "--server.address", address]
    argv += ["--browser.gatherUsageStats", "false"]
    try:
        streamlit_cli.main(args=argv, prog_name="streamlit", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
