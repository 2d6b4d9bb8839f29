"""Live reload for development (compose.dev.yaml): runs the server, and runs it again whenever
a file under FOLDER changes.

    python dev_reload.py [--interval S] FOLDER -- COMMAND [ARG...]

It stays up when the server exits (a syntax error, a failed import) and waits for the next
change, so the fix is served within a poll instead of after Docker's restart backoff of a
crash-looping container. SIGTERM or SIGINT goes to the server; once it has exited, this exits
with its status. It polls modification times: standard library only (the image has no file
watcher), and polling sees edits through every kind of bind mount.
"""

import argparse
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

# Each file: its modification time (ns) and size.
Snapshot = dict[Path, tuple[int, int]]


def snapshot(folder: Path) -> Snapshot:
    files: Snapshot = {}
    for path in folder.rglob("*"):
        if "__pycache__" in path.parts:  # the interpreter's writes, not edits
            continue
        try:
            status = path.stat()
        except FileNotFoundError:  # removed while the folder was read
            continue
        if stat.S_ISREG(status.st_mode):
            files[path] = (status.st_mtime_ns, status.st_size)
    return files


def changed(before: Snapshot, after: Snapshot) -> list[Path]:
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )


def say(message: str) -> None:
    print(f"dev_reload: {message}", file=sys.stderr, flush=True)


def exit_status(returncode: int) -> int:
    """A shell's: a server ended by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Reloader:
    def __init__(self, folder: Path, command: list[str], interval: float) -> None:
        self.folder = folder
        self.command = command
        self.interval = interval
        self.server: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None

    def start(self) -> None:
        self.server = subprocess.Popen(self.command)
        if self.stop_signal is not None:  # it came while the server was starting
            self.server.send_signal(self.stop_signal)

    def forward(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signum)

    def restart(self, edits: list[Path]) -> None:
        shown = ", ".join(str(path.relative_to(self.folder)) for path in edits[:3])
        more = f" and {len(edits) - 3} more" if len(edits) > 3 else ""
        say(f"{shown}{more} changed: starting the server again")
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()  # its graceful shutdown, as `docker compose stop` gives it
            self.server.wait()
        if self.stop_signal is None:
            self.start()

    def settled(self, files: Snapshot) -> Snapshot:
        """The folder once a poll has seen no further change: an editor's save or a checkout
        writes in steps (a file truncated, then written), and the server must start on the
        last."""
        while True:
            time.sleep(self.interval)
            now = snapshot(self.folder)
            if now == files or self.stop_signal is not None:
                return now
            files = now

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)
        files = snapshot(self.folder)  # before the start: an edit during it is seen
        self.start()
        while self.stop_signal is None:
            time.sleep(self.interval)
            if self.server is not None and (returncode := self.server.poll()) is not None:
                say(f"the server exited ({returncode}); waiting for a change under {self.folder}")
                self.server = None
            if (now := snapshot(self.folder)) != files:
                now = self.settled(now)
                edits = changed(files, now)  # none when a file was put back as it was
                files = now
                if edits:
                    self.restart(edits)
        return exit_status(self.server.wait()) if self.server is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python dev_reload.py", description="Runs COMMAND again when FOLDER changes."
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("folder", type=Path, help="what to watch (every file below it)")
    parser.add_argument("command", nargs="+", help="the server's command, after --")
    args = parser.parse_args(argv)
    return Reloader(args.folder, args.command, args.interval).run()


if __name__ == "__main__":
    sys.exit(main())
