"""Where and when a benchmark ran: the header every benchmark script writes beside its numbers.

Timings mean little without the machine, the date and how busy the machine was (the load
average: the benchmark machine is shared), so every script takes them from here, in one
form: :func:`machine` for the JSON files, :func:`header_lines` for the text tables.
"""

from __future__ import annotations

import datetime as dt
import os
import platform


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict:
    """Platform, Python version, processor and number of logical CPUs, for a JSON summary."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "processor": cpu_name(), "cpus": os.cpu_count()}


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


def format_load(digits: int = 2, sep: str = ", ") -> str:
    """The load averages as text, e.g. ``"1.02, 0.87, 0.55"``."""
    return sep.join(f"{x:.{digits}f}" for x in load_average())


def header_lines(title: str, libraries: str | None = None) -> list[str]:
    """Title, date, machine, optionally library versions, and the load average at start."""
    lines = [
        title,
        f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
    ]
    if libraries:
        lines.append(f"libraries: {libraries}")
    lines.append(f"load average at start (1, 5, 15 min): {format_load()}")
    return lines
