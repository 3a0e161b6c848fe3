"""Import boundaries: what the door loads, and no import circle inside app/.

`vos door serve` is the one process that faces the internet: it must not carry the operator's
toolkit (pyinfra, testinfra, gnupg, the docker SDK, staging/, roles/, backups/, checks/).
The probe runs in a fresh interpreter, as the container does: the console script's module
(`cli`, `vos = "cli:main"`), `vos door serve --help`, `vos door serve` up to its refusal
without secrets (app.main imported, nothing served), and the door's app built as each uvicorn
worker builds it (`app.door.worker:create_app`). It reads `sys.modules` at the end rather than
`python -X importtime`'s report: importtime logs only `import` statements, not
`importlib.import_module` (how `vos` loads a command's module and uvicorn its app), so it
would miss exactly the imports that matter here.
"""

from __future__ import annotations

import ast
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli

REPO = Path(__file__).resolve().parents[2]
TOOLKIT = {"pyinfra", "testinfra", "gnupg", "docker", "staging", "roles", "backups", "checks",
           "stack", "deploys", "inventory", "devtools", "cli"}
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()

DOOR_PROBE = f"""
import os
import cli

for argv in (["door", "serve", "--help"], ["door", "serve"]):
    try:
        cli.cli(argv, prog_name="vos")
    except SystemExit:
        pass
os.environ["VOS_DOOR_SECRETS"] = '{{"edge": "{SECRET}"}}'
os.environ["DATABASE_URL"] = "postgresql://vos_app:x@127.0.0.1:9/vos"
from app.door import worker
worker.create_app()
"""
REPORT = "\nimport sys\nprint('probe done', *sorted(sys.modules))\n"


def imported_by(code: str) -> set[str]:
    """Every module a fresh interpreter has loaded after running `code`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VOS_") and k not in ("DATABASE_URL", "PYTHONPATH")}
    done = subprocess.run([sys.executable, "-c", code + REPORT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "probe done" in done.stdout, done.stdout + done.stderr[-3000:]
    return set(done.stdout.rsplit("probe done", 1)[1].split())


def toolkit_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in TOOLKIT - {"cli"})


def test_the_door_loads_none_of_the_toolkit():
    modules = imported_by(DOOR_PROBE)
    # the probe did walk the door's path (else an empty answer would pass)
    assert {"cli", "app.cli", "app.main", "app.door.worker", "uvicorn"} <= modules
    assert toolkit_in(modules) == []
    # nor the app's other command groups: only the door's own module was loaded
    assert not modules & {"app.agents.cli", "app.agents.docs_cli", "app.ui.cli"}


def test_vos_door_serve_help_via_the_console_script_loads_none_of_the_toolkit():
    modules = imported_by("import sys\nsys.argv = ['vos', 'door', 'serve', '--help']\n"
                          "from cli import main\ntry:\n    main()\nexcept SystemExit:\n"
                          "    pass\n")
    assert "app.cli" in modules
    assert toolkit_in(modules) == []


def test_vos_app_door_serve_the_containers_entry_point_loads_only_the_app():
    """`vos-app` (app/entry.py) is what the image runs: no toolkit module, not even `cli`."""
    modules = imported_by("import sys\nsys.argv = ['vos-app', 'door', 'serve', '--help']\n"
                          "from app.entry import main\ntry:\n    main()\nexcept SystemExit:\n"
                          "    pass\n")
    assert {"app.entry", "app.cli"} <= modules
    assert sorted(m for m in modules if m.split(".")[0] in TOOLKIT) == []


def test_no_app_module_imports_the_toolkit():
    """The app is its own distribution (app/pyproject.toml) and the image ships it alone: an
    import of the toolkit anywhere in app/, even deferred inside a function, would fail there."""
    offenders = []
    for path in sorted((REPO / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in TOOLKIT]
    assert offenders == []


def test_the_app_distribution_lists_every_app_package():
    """app/pyproject.toml names its packages (the project directory is the package): a new
    sub-package missing from the list would be left out of the image."""
    import tomllib

    project = tomllib.loads((REPO / "app" / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    on_disk = {".".join(("app", *path.parent.relative_to(REPO / "app").parts))
               for path in (REPO / "app").rglob("__init__.py")}
    assert listed == on_disk


def test_every_app_command_is_in_the_toolkit_cli_too():
    from app.entry import APP_COMMANDS

    assert {name: cli.COMMANDS[name] for name in APP_COMMANDS} == APP_COMMANDS


def test_every_command_is_listed_and_registered_by_the_module_named_for_it():
    """COMMANDS (cli.py) is how `vos` finds a command without importing everything: each
    module must add exactly the names listed for it, no more (an unlisted one is invisible)."""
    by_spec: dict[str, set[str]] = {}
    for name, spec in cli.COMMANDS.items():
        by_spec.setdefault(spec, set()).add(name)
    for spec, names in by_spec.items():
        assert set(cli.commands_of(spec, min(names))) == names, spec


@pytest.mark.parametrize("argv", [["--help"], ["door", "--help"], ["agents", "work", "--help"],
                                  ["staging", "--help"], ["check", "--help"]])
def test_help_lists_every_command(argv):
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.cli, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    if argv == ["--help"]:
        assert all(f" {name} " in result.output for name in cli.COMMANDS), result.output


def test_a_mistyped_command_is_suggested_without_loading_every_module():
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.cli, ["dorr"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Did you mean 'door'" in result.output


# ------------------------------------------------------------------ no import circle in app/


def app_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((REPO / "app").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The app modules `path` imports, at module level or deferred inside a function (a
    deferred import that closes a circle is still a circle, only hidden until run time).
    `from pkg import name` counts as pkg.name when that is a module, else as pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            found |= submodules or {node.module}
            if len(submodules) < len(node.names):
                found.add(node.module)
    return found & modules.keys()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# None left: the env-name rule config and tools both need lives in app.agents.envnames.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_circle_among_app_modules():
    modules = app_modules()
    graph = {name: imports_of(path, modules) - {name} for name, path in modules.items()}
    found = cycles(graph)
    assert [c for c in found if c not in KNOWN_CYCLES] == [], "import circle(s) in app/"
    stale = [c for c in KNOWN_CYCLES if c not in found]
    assert not stale, f"{stale} is gone: remove it from KNOWN_CYCLES"


def test_the_cycle_finder_finds_a_deferred_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
