"""A placed instance gets its model file on its node, then starts.

``do_prepare_start`` runs right after a placement (``placement_pass``): a path model or a ready
copy starts at once; otherwise the file is requested and the instance waits for it
(``waiting_for_files``). Each agent's supervisor calls ``do_check_waiting`` for its node.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from inventory.models import Node
from models_app import actions as model_actions
from models_app.choices import DownloadState, SourceKind
from models_app.models import ModelFile
from scheduling import lifecycle
from scheduling.choices import InstanceState as S
from scheduling.fleet import HAVING_STATES
from scheduling.models import Instance


def do_prepare_start(instance_id: Any) -> None:
    """A scheduled instance: start it if its node has the file, else fetch the file."""
    instance = Instance.objects.select_related("deployment__model", "node").get(pk=instance_id)
    if instance.state != S.SCHEDULED or instance.node is None:
        return
    model = instance.deployment.model
    if model.source_kind == SourceKind.PATH:
        with transaction.atomic():
            lifecycle.enqueue(instance, lifecycle.START_TASK)
        return
    copy = _copy_on(instance.node, instance)
    if copy is not None and copy.state == DownloadState.READY:
        with transaction.atomic():
            Instance.objects.filter(pk=instance.pk).update(model_file=copy)
            lifecycle.enqueue(instance, lifecycle.START_TASK)
        return
    _wait_for_file(instance, copy)


def _copy_on(node: Node, instance: Instance) -> ModelFile | None:
    copies = ModelFile.objects.filter(model=instance.deployment.model, node=node)
    return copies.filter(state__in=HAVING_STATES).order_by("-created_at").first()


def _wait_for_file(instance: Instance, copy: ModelFile | None) -> None:
    assert instance.node is not None
    if copy is None:
        try:
            copy = model_actions.do_request_download(instance.deployment.model, instance.node)
        except model_actions.DownloadRefused as exc:
            lifecycle.do_back_to_pending(instance, f"Cannot download the model: {exc.message}")
            return
    reason = f"Waiting for {copy.model} to download to {instance.node.name}."
    lifecycle.move(instance, (S.SCHEDULED,), S.WAITING_FOR_FILES, model_file=copy, reason=reason)


def do_check_waiting(node: Node) -> int:
    """Instances of ``node`` waiting for their file: start those whose copy is ready,
    send back to placement those whose copy failed or went away."""
    changed = 0
    waiting = Instance.objects.filter(node=node, state=S.WAITING_FOR_FILES).select_related(
        "model_file", "node", "deployment"
    )
    for instance in waiting:
        copy = instance.model_file
        if copy is not None and copy.state == DownloadState.READY:
            with transaction.atomic():
                moved = lifecycle.move(
                    instance, (S.WAITING_FOR_FILES,), S.SCHEDULED, reason="",
                    files_at=timezone.now(),
                )  # fmt: skip
                if moved:
                    lifecycle.enqueue(instance, lifecycle.START_TASK)
                    changed += 1
        elif copy is None or copy.state not in HAVING_STATES:
            error = copy.error if copy is not None and copy.error else "the copy went away"
            changed += lifecycle.do_back_to_pending(instance, f"The download failed: {error}")
    return changed
