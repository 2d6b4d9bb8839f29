"""compose.dev.yaml's live reload (scripts/dev_reload.py): a server that fails to start waits
for the next edit, with the reloader still up, instead of ending the container."""

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.project import ROOT, render_compose

RELOADER = ROOT / "scripts" / "dev_reload.py"
POLL = 0.05
# Stands in for Hypercorn: records each start with the source it found, fails on a broken
# source as an import of a syntax error does, and ends cleanly on SIGTERM.
SERVER = """
import signal, sys, time
from pathlib import Path
source = Path(sys.argv[1]).read_text()
with open(sys.argv[2], "a") as starts:
    starts.write(source + "\\n")
if "broken" in source:
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""


def within(seconds: float, check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


class Tree:
    def __init__(self, root: Path) -> None:
        self.watched = root / "service"
        self.watched.mkdir()
        self.source = self.watched / "main.py"
        self.log = root / "starts"
        self.said = root / "said"  # the reloader's stderr
        self.server = root / "server.py"
        self.server.write_text(SERVER)

    def starts(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


@pytest.fixture
def reloader(tree: Tree) -> Iterator[subprocess.Popen[bytes]]:
    tree.source.write_text("good")
    server = [sys.executable, str(tree.server), str(tree.source), str(tree.log)]
    command = [sys.executable, str(RELOADER), "--interval", str(POLL), str(tree.watched), "--"]
    with tree.said.open("w") as said:
        process = subprocess.Popen([*command, *server], stderr=said)
    yield process
    if process.poll() is None:
        process.terminate()  # passed on: no server outlives the test
    process.wait(timeout=10)


def test_a_failed_start_waits_for_the_fix_and_the_reloader_stays_up(
    tree: Tree, reloader: subprocess.Popen[bytes]
) -> None:
    assert within(10, lambda: tree.starts() == ["good"])
    tree.source.write_text("broken")
    assert within(10, lambda: tree.starts() == ["good", "broken"])
    time.sleep(10 * POLL)  # polls with no edit: no start, and the reloader is still up
    assert tree.starts() == ["good", "broken"]
    assert reloader.poll() is None
    tree.source.write_text("fixed")
    assert within(10, lambda: tree.starts() == ["good", "broken", "fixed"])
    reloader.send_signal(signal.SIGTERM)
    assert reloader.wait(timeout=10) == 0, "the server's clean exit is the reloader's"
    said = tree.said.read_text()
    assert "main.py changed: starting the server again" in said
    assert f"the server exited (1); waiting for a change under {tree.watched}" in said


def test_a_new_file_is_a_change(tree: Tree, reloader: subprocess.Popen[bytes]) -> None:
    assert within(10, lambda: tree.starts() == ["good"])
    (tree.watched / "new.py").write_text("")
    assert within(10, lambda: tree.starts() == ["good", "good"])


def test_the_dev_overlay_runs_the_server_under_the_reloader() -> None:
    app = render_compose("compose.yaml", "compose.dev.yaml")["services"]["app"]
    reloader, watched, separator, *server = app["command"][1:]
    mounts = {mount["target"]: mount["source"] for mount in app["volumes"]}
    assert mounts[reloader] == str(RELOADER)
    assert mounts[f"/app/{watched}"] == str(ROOT / "service")
    assert separator == "--"
    assert server == ["hypercorn", "-c", "hypercorn.toml", "service.main:app"]
