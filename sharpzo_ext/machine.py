"""The machine a measurement ran on, as benchmark tables and compare reports name it."""

from __future__ import annotations

import platform

__all__ = ["cpu_model", "cpu_fields"]


def cpu_fields() -> dict[str, str]:
    """The fields of /proc/cpuinfo's first processor ({} where there is no such file)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name with its x86 family and model numbers (virtual machines often show
    a generic name), or the platform's processor where /proc/cpuinfo has no model name."""
    fields = cpu_fields()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f", family {fields['cpu family']} model {fields['model']}"
    return name
