"""
Metric families and the Prometheus text exposition format (0.0.4).

Pure values and one renderer, shared by every proxy's status listener:
a proxy describes what it has as `MetricFamily` values and
`render_prometheus` writes them with their HELP and TYPE lines.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
METRIC_KINDS = ("counter", "gauge")


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a metric, with its labels in order."""

    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """
    A named metric, its kind ("counter" or "gauge"), a help sentence and
    its samples.  A counter's name ends in ``_total``; values are in base
    units (bytes, seconds).
    """

    name: str
    kind: str
    help: str
    samples: tuple[Sample, ...]

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"metric {self.name}: kind must be counter or gauge")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")
        if not self.name.startswith("multiproxy_"):
            raise ValueError(f"metric {self.name} must start with multiproxy_")


def family(name: str, kind: str, help_text: str,
           samples: Iterable[tuple[dict[str, str], float]]) -> MetricFamily:
    """A `MetricFamily` from ``(labels, value)`` pairs (labels as a dict, in order)."""
    return MetricFamily(name, kind, help_text, tuple(
        Sample(tuple((k, str(v)) for k, v in labels.items()), value)
        for labels, value in samples
    ))


def render_prometheus(families: Iterable[MetricFamily]) -> bytes:
    """The families in the Prometheus text exposition format, each with HELP and TYPE."""
    lines = []
    for metric in families:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for sample in metric.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in sample.labels)
                lines.append(f"{metric.name}{{{labels}}} {format_number(sample.value)}")
            else:
                lines.append(f"{metric.name} {format_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def escape_label(value: str) -> str:
    """A label value escaped as the exposition format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_number(value: float) -> str:
    """An integer as written, a float rounded to microseconds, NaN and infinities by name."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(value, 6))
