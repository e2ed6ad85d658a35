"""What makes `kdviz app` draw its first chart sooner: no torch before the server listens, and a
warm-up that starts once it does."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from kdviz import cli, data
from kdviz.ui import launch

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
