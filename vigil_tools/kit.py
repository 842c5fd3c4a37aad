"""The benchmark kit shared by `vigil bench model|pipeline|offline|train`: the device to run on,
the environment line stated above every table, and reports (`Section`s of rows) written as
Markdown or JSON. Timing and its statistics are `detector.timing`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from detector.errors import ConfigError


# =============================================================================== environment
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} torch threads)"


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as typed (`vigil bench ...`), quoted so it can be pasted back."""
    argv = list(sys.argv if argv is None else argv)
    if argv and (argv[0].endswith("vigil") or argv[0].endswith("cli.py")):
        argv[0] = "vigil"
    return " ".join(shlex.quote(a) for a in argv)


@dataclass
class BenchEnv:
    """Where and how a benchmark ran; stated above every table and in every JSON row."""
    device: str
    device_name: str
    torch: str
    torchvision: str
    opencv: str
    python: str
    threads: int
    command: str
    date: str
    cpu_bf16: bool

    def line(self) -> str:
        return (f"device {self.device} ({self.device_name}); torch {self.torch}, torchvision "
                f"{self.torchvision}, OpenCV {self.opencv}, Python {self.python}; "
                f"{self.threads} torch threads; {self.date}; command: `{self.command}`")


def bench_env(device: torch.device, command: Optional[str] = None) -> BenchEnv:
    """Collect the environment line of a benchmark."""
    import torchvision
    try:
        import cv2
        cv_version = cv2.__version__
    except ImportError:
        cv_version = "absent"
    return BenchEnv(device=str(device), device_name=device_name(device), torch=torch.__version__,
                    torchvision=torchvision.__version__, opencv=cv_version,
                    python=platform.python_version(), threads=torch.get_num_threads(),
                    command=command if command is not None else command_line(),
                    date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    cpu_bf16=cpu_bf16_supported())


# =============================================================================== reports
@dataclass
class Section:
    """One table: a title, column names, row dicts (keys = columns) and notes under it."""
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchReport:
    """A benchmark's result: environment + tables. `to_markdown()` / `to_json()`."""
    title: str
    env: BenchEnv
    sections: list[Section] = field(default_factory=list)

    def to_markdown(self) -> str:
        out = [f"## {self.title}", "", self.env.line(), ""]
        for sec in self.sections:
            out += [f"### {sec.title}", "", markdown_table(sec.columns, sec.rows), ""]
            out += [f"- {n}" for n in sec.notes]
            if sec.notes:
                out.append("")
        return "\n".join(out)

    def to_json(self) -> str:
        env = dataclasses.asdict(self.env)
        return json.dumps({"title": self.title, "env": env, "sections": [
            {"title": s.title, "columns": s.columns, "notes": s.notes,
             "rows": [{**r, "env": env} for r in s.rows]} for s in self.sections]},
            indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def format_cell(value: Any) -> str:
    """Markdown cell text: 3-4 significant digits for floats, `-` for missing values."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000:
            return f"{value:,.0f}"
        if mag >= 100:
            return f"{value:.1f}"
        if mag >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table of `rows` (missing keys print as `-`)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_report(report: BenchReport, path: str | Path) -> Path:
    """Write `report` as Markdown (`.md`) or JSON (`.json`), chosen by the suffix.

    Raises:
        ConfigError: any other suffix.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = report.to_json()
    elif path.suffix.lower() in (".md", ".markdown"):
        text = report.to_markdown()
    else:
        raise ConfigError(f"--out {path}: use a .md or .json file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path
