"""mtfuse.machine: the device the benchmarks record."""

from __future__ import annotations

import os

from mtfuse import machine


def test_cpu_tag_names_the_cpu_and_its_cores() -> None:
    name = machine.cpu_name()
    assert name and name != "unknown"
    assert machine.device_tag(cpu=True) == ("cpu", f"{name}, {os.cpu_count()} cores")


def test_cpu_name_without_proc_cpuinfo(monkeypatch) -> None:
    def missing(self, *args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(machine.Path, "read_text", missing)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    assert machine.cpu_name() == "x86_64"
