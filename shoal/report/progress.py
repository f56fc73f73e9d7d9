"""A live progress bar for runs: round, clients, loss, accuracy, elapsed (rich)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from shoal.runtime.history import Record


class RoundProgress:
    """Use as a context manager; pass the instance as a callback to the run."""

    def __init__(self, total_rounds: int, done: int = 0, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("rounds", total=total_rounds, completed=done, status="starting")

    def __enter__(self) -> RoundProgress:
        self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def __call__(self, record: Record) -> None:
        parts = [f"clients {record.get('clients_completed', 0)}/{record.get('clients_selected', 0)}"]
        if record.get("train_loss") is not None:
            parts.append(f"loss {record['train_loss']:.3f}")
        if record.get("test_accuracy") is not None:
            parts.append(f"acc {record['test_accuracy']:.3f}")
        if record.get("dp_epsilon") is not None:
            parts.append(f"eps {record['dp_epsilon']:.2f}")
        if record.get("aborted"):
            parts.append("[yellow]aborted")
        self.progress.update(self.task, completed=record["round"], status="  ".join(parts))
