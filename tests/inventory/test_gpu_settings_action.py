import pytest
from django.core.exceptions import ValidationError

from inventory.actions import do_update_gpu_settings
from inventory.models import Gpu
from tests.factories import GIB


def test_priority_enabled_and_reserved_are_saved(gpu):
    do_update_gpu_settings(gpu, priority=80, enabled=False, reserved_override=2 * GIB)
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.enabled, gpu.reserved) == (80, False, 2 * GIB)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"reserved_override": 81 * GIB}, "reserved_override"),
        ({"memory_total": 1}, "memory_total"),
    ],
)
def test_bad_values_name_the_field_and_change_nothing(gpu, changes, field):
    before = Gpu.objects.values().get(pk=gpu.pk)
    with pytest.raises(ValidationError) as err:
        do_update_gpu_settings(gpu, **changes)
    assert field in err.value.message_dict
    assert Gpu.objects.values().get(pk=gpu.pk) == before


def test_reserved_defaults_to_the_global_setting(gpu, settings):
    settings.GPUFLEET_RESERVED_DEFAULT = 3 * GIB
    assert gpu.reserved == 3 * GIB
