from django import template

from inventory.presenters import GpuRow, gpu_state

register = template.Library()


@register.filter(name="gpu_state")
def gpu_state_filter(row: GpuRow) -> str:
    return gpu_state(row)


@register.filter
def mib(value: int | None) -> str:
    return "–" if value is None else f"{int(value) // (1024 * 1024):,}"


@register.filter
def gib(value: int | None) -> str:
    return "–" if value is None else f"{int(value) / 1024**3:.1f}"
