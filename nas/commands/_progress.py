"""Where a latency measurement stands and about how long is left, on stderr (stdout stays the
command's output, so `--json` stays one document).

    >>> progress = MeasuringProgress(50, "latency fit")
    >>> progress.begin(8)                       # a group of configs whose rounds interleave
    >>> measure_latencies(chunk, progress=progress, ...)      # one line after each round
    >>> progress.end()                          # the group is measured

The estimate for the group being measured is the protocol's own (`nas.latency.measure.Progress`:
the rounds left at the forward time seen so far); the groups after it are
estimated at the seconds per config of the groups before (or, for the first, of this one). A set
of rounds measured again because they disagreed is not foreseen: the estimate grows when it starts.
"""

from __future__ import annotations

import time

import click

from nas.latency.protocol import UNCERTAINTY_TARGET_PCT


def duration(seconds: float) -> str:
    """"45 s", "3 min 05 s", "1 h 02 min"."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def protocol_line(configs: int, warmup: int, repeats: int, rounds: int, group: int) -> str:
    """What measuring `configs` configs involves, said before it starts (why it takes a while)."""
    rounds = min(rounds, repeats)
    what = f"{configs} config{'s' if configs != 1 else ''}"
    how = f"{warmup} warm-up and {repeats} timed forwards each, in {rounds} rounds"
    if configs > 1:
        how += f", {min(configs, group)} configs at a time"
    return f"measuring {what}: {how}"


class MeasuringProgress:
    """Prints where measuring `total` configs stands, with an estimate of the time left.

    `begin(n)` before each group of n configs, the object itself as the group's `progress=`
    callback, `end()` after the group; `left_s()` is the current estimate.
    """

    def __init__(self, total: int, label: str, echo=None):
        self.total, self.label = total, label
        self.echo = echo or (lambda line: click.echo(line, err=True))
        self.done = 0                 # configs measured in finished groups
        self.spent = 0.0              # seconds those groups took
        self.group, self.group_start = 0, time.monotonic()
        self.group_left = None        # the protocol's estimate for the group, seconds

    def begin(self, configs: int) -> None:
        self.group, self.group_start, self.group_left = configs, time.monotonic(), None

    def end(self) -> None:
        self.spent += time.monotonic() - self.group_start
        self.done += self.group
        self.group, self.group_left = 0, 0.0

    def __call__(self, p) -> None:
        """A `nas.latency.measure.Progress` of the group being measured."""
        self.group_left = p.left_s
        if p.done == 0:
            where = "warm-up done"
        else:
            where = f"round {p.done}/{p.rounds}"
        if p.remeasure:
            which = "the config" if p.configs == 1 else f"the {p.configs} configs"
            where = f"measuring again {which} whose rounds disagreed (uncertainty over +-{UNCERTAINTY_TARGET_PCT:g} %): {where}"
        elapsed = time.monotonic() - self.group_start + self.spent
        self.echo(f"{self.label}: {self._which()}{where}; {duration(elapsed)} elapsed, "
                  f"about {duration(self.left_s())} left")

    def _which(self) -> str:
        if self.total <= 1:
            return ""
        first, last = self.done + 1, self.done + self.group
        return f"configs {first}-{last} of {self.total}, " if last > first else f"config {first} of {self.total}, "

    def left_s(self) -> float:
        """Seconds left: the group's own estimate, and the configs after it at the seconds per
        config seen so far."""
        group_left = self.group_left or 0.0
        after = self.total - self.done - self.group
        if after <= 0:
            return group_left
        if self.done:
            per_config = self.spent / self.done
        elif self.group and self.group_left is not None:
            per_config = (time.monotonic() - self.group_start + group_left) / self.group
        else:
            return group_left
        return group_left + after * per_config
