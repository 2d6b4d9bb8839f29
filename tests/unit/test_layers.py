"""The service's floors: each part (a subpackage, or a module at the top) imports only the parts
on the floors below it, so no import goes back up and there is no circle. Read from the
source with ast, imports under TYPE_CHECKING and inside functions too."""

import ast
from pathlib import Path

from tests.project import ROOT

# Lowest first. A part on no floor fails the test: give it one.
FLOORS = (
    {"settings", "models", "draining", "logs"},
    {"db", "otel"},
    {"metrics", "tracing"},
    {"background", "middleware"},
    {"domain"},
    {"runtime", "keys"},
    {"api", "lifespan"},
    {"main"},
    {"server"},
)
PACKAGE = ROOT / "service"


def part_of(module: str) -> str:
    """`service.db.pool` -> `db`; `service.main` -> `main`."""
    return module.split(".")[1]


def imported_parts(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from service import keys` names the part in the alias.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        imported |= {part_of(name) for name in names if name.startswith("service.")}
    return imported


def test_every_part_imports_only_the_floors_below_it() -> None:
    floor_of = {part: number for number, floor in enumerate(FLOORS) for part in floor}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) == 1:
            continue
        part = relative.parts[0].removesuffix(".py")
        assert part in floor_of, f"{part} is on no floor of FLOORS"
        for other in imported_parts(path) - {part}:
            if floor_of[other] >= floor_of[part]:
                upward.append(f"{relative} imports {other} (floor {floor_of[other]})")
    assert not upward, upward
