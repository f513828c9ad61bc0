"""Terminal output: the Rich console and the Reporter that shows workflow progress on it."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class RichReporter:
    """Shows each step with a spinner while it runs, then a check mark (or a cross) and its duration."""

    def __init__(self, out: Console | None = None, quiet: bool = False) -> None:
        self.out = out or err_console
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            if self.quiet:
                yield
            else:
                with self.out.status(f"{escape(title)} ..."):
                    yield
        except BaseException:
            self.out.print(f"[red]✗[/red] {escape(title)} [dim]({time.monotonic() - start:.1f}s)[/dim]")
            raise
        if not self.quiet:
            self.out.print(f"[green]✓[/green] {escape(title)} [dim]({time.monotonic() - start:.1f}s)[/dim]")

    def info(self, text: str) -> None:
        if not self.quiet:
            self.out.print(f"  {escape(text)}")

    def warn(self, text: str) -> None:
        self.out.print(f"[yellow]![/yellow] {escape(text)}")
