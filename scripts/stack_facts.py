"""What scripts/deploy, scripts/backup, scripts/bench and the tests all know of this stack, said
once. Standard library only: scripts/deploy runs on a plain python3."""

from pathlib import Path


class EnvFileError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """An env file as compose reads it: NAME=value lines, # comments, quotes around a value
    dropped. A line without `=` is an error that names it."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise EnvFileError(f"{path}:{number}: expected NAME=value")
        values[key.strip()] = value.strip().strip("'\"")
    return values
