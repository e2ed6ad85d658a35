"""What makes `kdviz app` draw its first chart sooner: no torch before the server listens, a
warm-up that starts once it does, and the first page's front-end chunks asked for early."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from kdviz import cli, data
from kdviz.ui import launch, preload

REPO = Path(__file__).resolve().parents[1]


def test_kdviz_app_reaches_serve_without_importing_torch(tmp_path):
    # The other commands' parser imports torch (~2 s); `kdviz app` leaves it to the warm-up.
    code = textwrap.dedent(
        f"""
        import sys
        from kdviz.ui import launch
        seen = {{}}
        def serve(app, port, address, data=None):
            launch.restrict_data(address, data or [])
            seen["torch"] = "torch" in sys.modules
            seen["args"] = (port, address, data)
            return 0
        launch.serve = serve
        from kdviz.cli import main
        assert main(["app", "--port", "8765", "--data", {str(tmp_path)!r}]) == 0
        print(seen)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert f"'torch': False, 'args': (8765, '127.0.0.1', [{str(tmp_path)!r}])" in out


def test_the_app_parser_parses_as_the_full_one():
    argv = ["app", "--port", "9000", "--address", "0.0.0.0", "--data", "a", "--data", "b"]
    assert vars(cli._app_parser().parse_args(argv)) == vars(cli.build_parser().parse_args(argv))


def test_launch_names_the_data_roots_variable_as_data_does():
    assert launch.DATA_ROOTS_ENV == data.DATA_ROOTS_ENV


def test_wait_for_server_waits_for_a_listening_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not launch.wait_for_server(port, "127.0.0.1", limit=0.2)  # bound, not listening
        server.listen()
        assert launch.wait_for_server(port, "0.0.0.0", limit=5)  # "all addresses": localhost


def test_the_preload_script_names_chunks_of_this_streamlit():
    files = preload.chunk_files()
    folder = Path(st.__file__).parent / "static" / "static" / "js"
    assert files[0].startswith("PlotlyChart.") and all((folder / f).is_file() for f in files)
    # the front end imports each chunk under this name; a rename in a newer Streamlit shows here
    index = next(folder.glob("index.*.js")).read_text()
    assert all(f"./{f}" in index for f in files)


def test_the_app_sends_the_preload_script_first(kdviz_home):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    scripts = [h.proto.body for h in at.get("html") if "__kdvizPreloaded" in h.proto.body]
    assert len(scripts) == 1 and preload.chunk_files()[0] in scripts[0]
    first = at.main[0]  # the hidden container that holds it comes before everything else
    assert first.proto.id.endswith(preload.KEY)
    assert any("__kdvizPreloaded" in h.proto.body for h in first.get("html"))
