"""`vos dev` and `vos fake-providers`: the app on one laptop, with no real provider or key.

Example:
    vos dev                                   # whole app on 127.0.0.1:8080, prints the URL
    vos fake-providers --base-port 18000 --script anthropic=429:2,529
"""

from __future__ import annotations

import ipaddress
import signal
import time
from typing import Annotated

import typer

from app.clihelpers import load_settings

LOOPBACK_NAMES = {"localhost"}


def fake_providers(
    base_port: Annotated[int, typer.Option(
        help="first port (anthropic; openai, openrouter and ollama follow); 0 = free ports",
        min=0, max=65530)] = 0,
    api_key: Annotated[str, typer.Option(help="the key the fakes accept (not a real key)")] =
        "fake-key",
    script: Annotated[list[str] | None, typer.Option(
        help="queue failures: NAME=SPEC[,SPEC…], SPEC is 429[:secs], 500, 503, 529, 401, "
             "400 or context; repeatable")] = None,
    duration: Annotated[float, typer.Option(
        help="stop after this many seconds (0 = until Ctrl-C)", min=0)] = 0,
) -> None:
    """Serve fake Anthropic, OpenAI, OpenRouter and Ollama APIs on 127.0.0.1.

    They speak each wire format (JSON and streaming), report usage with cache fields computed
    from the prefixes they have seen, and fail on demand. Point the SDKs' base_url at them.
    """
    from devtools.fakes import start_fake_fleet

    fleet = start_fake_fleet(api_key=api_key, base_port=base_port)
    try:
        for entry in script or []:
            name, _, specs = entry.partition("=")
            if name not in fleet or not specs:
                raise typer.BadParameter(
                    f"--script {entry!r}: use NAME=SPEC[,SPEC…] with NAME one of {sorted(fleet)}")
            fleet[name].script(*specs.split(","))
        for name, server in fleet.items():
            typer.echo(f"{name:<11} {server.wire:<10} base_url={server.base_url}")
        typer.echo(f"api key: {api_key!r}. Ctrl-C stops." if not duration
                   else f"api key: {api_key!r}. Stopping after {duration:g}s.")
        deadline = time.monotonic() + duration if duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for server in fleet.values():
            server.stop()
        typer.echo("fake providers stopped")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dev(
    host: Annotated[str, typer.Option(help="loopback address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8080,
    tenant: Annotated[str, typer.Option(help="slug of the demo tenant")] = "demo",
    app_password_env: Annotated[str, typer.Option(
        help="with DATABASE_URL: variable holding the vos_app password to set")] =
        "VOS_APP_PASSWORD",
) -> None:
    """Run the whole app on loopback: Postgres (embedded unless DATABASE_URL names an owner
    role), the fake providers, an agent worker, demo data; prints the Command Center URL."""
    from devtools.devserver import DevStack

    if not _is_loopback(host):
        typer.echo(f"error: vos dev serves loopback only (got {host}); the Command Center "
                   "is reached over the mesh in production (vos api serve --host MESH_IP)",
                   err=True)
        raise typer.Exit(2)
    stack = DevStack(load_settings(), tenant, app_password_env, say=typer.echo)
    # SIGTERM (a service manager, `timeout`, `kill`) stops everything like Ctrl-C, also while
    # starting: the embedded Postgres must never outlive `vos dev`
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        stack.serve(host, port)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # each part's error says what it was; the CLI adds what to do
        typer.echo(f"error: vos dev could not start: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        stack.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def register(cli: typer.Typer) -> None:
    """Attach `vos dev` and `vos fake-providers` to the top-level CLI."""
    cli.command("dev")(dev)
    cli.command("fake-providers")(fake_providers)
