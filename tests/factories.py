from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.utils import timezone

from core.access import OPERATOR_PERMISSIONS, OPERATORS_GROUP
from core.units import GIB
from inventory.models import Alert, Gpu, MaintenanceWindow, Node
from models_app.choices import SourceKind
from models_app.models import CatalogModel, ModelFile


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests")

    @factory.post_generation
    def operator(self, create: bool, extracted: bool | None, **kwargs: object) -> None:
        user: Any = self
        if extracted:
            user.groups.add(_operators_group())
        user.save()


def _operators_group() -> Group:
    """The group the migration creates; recreated after a transactional test's flush."""
    group, created = Group.objects.get_or_create(name=OPERATORS_GROUP)
    if created:
        group.permissions.set(
            Permission.objects.filter(
                content_type__app_label="inventory", codename__in=OPERATOR_PERMISSIONS
            )
        )
    return group


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Node

    name = factory.Sequence(lambda n: f"node-{n}")
    address = "127.0.0.1"
    cpu_count = 32
    ram_total = 256 * GIB
    ram_available = 200 * GIB
    last_heartbeat = factory.LazyFunction(timezone.now)


class GpuFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Gpu

    node = factory.SubFactory(NodeFactory)
    index = factory.Sequence(lambda n: n % 1000)
    uuid = factory.Sequence(lambda n: f"GPU-00000000-0000-0000-0000-{n:012d}")
    name = "NVIDIA A100-SXM4-80GB"
    memory_total = 80 * GIB
    memory_used = 2 * GIB
    utilization = 37.0
    temperature = 51.0
    power_draw = 180.0
    power_limit = 400.0
    driver_version = "550.54.15"
    cuda_version = "12.4"
    compute_capability = "8.0"
    sampled_at = factory.LazyFunction(timezone.now)


class MaintenanceWindowFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MaintenanceWindow

    node = factory.SubFactory(NodeFactory)
    starts_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    ends_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=3))
    message = "Driver upgrade"


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    key = factory.Sequence(lambda n: f"test:{n}")
    kind = "gpu_temperature"
    severity = "warning"
    message = "GPU is hot"


class CatalogModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CatalogModel

    display_name = factory.Sequence(lambda n: f"Tiny model {n}")
    source_kind = SourceKind.HF
    hf_repo = factory.Sequence(lambda n: f"owner/tiny-{n}-GGUF")
    hf_filename = "tiny-Q8_0.gguf"
    revision = "main"
    files = factory.LazyAttribute(
        lambda o: [{"name": o.hf_filename, "size": o.size_bytes, "sha256": ""}]
    )
    size_bytes = 2 * GIB
    architecture = "llama"
    quantization = "Q8_0"


class ModelFileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelFile

    model = factory.SubFactory(CatalogModelFactory)
    node = factory.SubFactory(NodeFactory)
    storage_root = "/srv/models"
    path = factory.LazyAttribute(lambda o: f"/srv/models/{o.model.pk}/{o.model.hf_filename}")
    bytes_total = factory.LazyAttribute(lambda o: o.model.size_bytes)
