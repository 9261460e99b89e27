"""Shared CLI plumbing: settings with flag overrides, failing with a clear message, output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from convergence.settings import Settings, SettingsError, load_settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str | BaseException, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` to stderr and exit with ``code`` (no traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", markup=True)
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    """The effective settings, with command-line overrides (``None`` = not given)."""
    try:
        return load_settings(overrides=overrides)
    except SettingsError as exc:
        fail(exc, 2)


def print_json(obj: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()
