"""Console output: rank 0 only, on stderr, so stdout stays clean for JSON and tables."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import TypeVar

from rich.console import Console

_console = Console(stderr=True, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    from .runtime import distributed as D

    if D.is_main():
        _console.print(message)


def warn(message: str) -> None:
    from .runtime import distributed as D

    if D.is_main():
        _console.print(f"[yellow]warning:[/yellow] {message}")


def progress_enabled() -> bool:
    """Whether this process reports progress: rank 0 only (a bar on a terminal, plain lines otherwise)."""
    from .runtime import distributed as D

    return D.is_main()


class Progress:
    """Progress of a long loop, on rank 0 only: a live tqdm bar on a terminal, plain log lines otherwise.

    A log file must not fill with ``\r`` bar redraws, yet a run under ``make demo > log`` or a batch scheduler must
    not sit silent for minutes. Off a terminal, a line is printed when ``update(..., line=True)`` asks for one
    (e.g. at the end of an epoch) or, with ``line=None``, each time another ``every`` fraction of ``total`` is done;
    it ends with the time elapsed and, until the end, the time left at the rate so far (``[1 min 4 s, ~3 min left]``;
    a resumed run's rate counts only the units done since it started), as the bar shows on a terminal.

    Args:
        total: units of work (epochs, batches, images); initial: units already done (a resumed run).
        enabled: False makes every call a no-op (library callers that want silence).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 every: float = 0.1) -> None:
        from .runtime import distributed as D

        self.total, self.desc, self.unit, self.done, self.every = max(int(total), 0), desc, unit, int(initial), every
        self.active = enabled and D.is_main()
        self.bar = None
        self._next = self._step_after(self.done)
        self._t0, self._initial = monotonic(), self.done
        if self.active and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, leave=False,
                            dynamic_ncols=True)

    def _step_after(self, done: int) -> int:
        step = max(1, int(round(self.every * self.total))) if self.total else 1
        return (done // step + 1) * step

    def update(self, n: int = 1, line: bool | None = None, **info: float | int | str) -> None:
        """Advance by ``n`` units; ``info`` (e.g. ``loss=0.41``) is shown on the bar or the line."""
        if not self.active:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix({k: _fmt(v) for k, v in info.items()})
            return
        crossed = self.done >= self._next or (self.total and self.done >= self.total)
        if line or (line is None and crossed):
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            extra = "".join(f"  {k} {_fmt(v)}" for k, v in info.items())
            _console.print(f"{self.desc}: {self.unit} {self.done}/{self.total}{pct}{extra}  {self._timing()}",
                           markup=False)
        if crossed:
            self._next = self._step_after(self.done)

    def _timing(self) -> str:
        """``[elapsed, ~left]``: the time left at this process's rate so far (none at the end, or before a unit)."""
        elapsed = monotonic() - self._t0
        ran = self.done - self._initial
        left = elapsed / ran * (self.total - self.done) if ran > 0 and self.total and self.done < self.total else None
        return f"[{duration(elapsed)}" + ("" if left is None else f", ~{duration(left)} left") + "]"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 12 s``, ``2 h 05 min``: a readable span for progress lines."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _fmt(v: float | int | str) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


T = TypeVar("T")


def track(items: Iterable[T], total: int, desc: str, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` while reporting :class:`Progress` (a line per 10% off a terminal)."""
    with Progress(total, desc, unit, enabled=enabled) as p:
        for x in items:
            yield x
            p.update(1)


#: how many class names a sentence (a log line, an error, a report paragraph) lists before "and N more"; the
#: manifest and results files keep every name
SHOWN = 10


def name_list(names: Iterable[object], limit: int = SHOWN) -> str:
    """``"a, b, c"``, or the first ``limit`` and ``"and N more"``: a dataset of 102 or 1,000 classes would otherwise
    write a line of hundreds of names."""
    shown = [str(n) for n in names]
    if len(shown) <= limit:
        return ", ".join(shown)
    return f"{', '.join(shown[:limit])} and {len(shown) - limit} more"
