"""Storage accounting per node: each storage root's free space (from the agent) and the
copies gpufleet keeps there, with what they take and when they were last used."""

from __future__ import annotations

from dataclasses import dataclass, field

from inventory.models import Node
from models_app.actions import root_free, storage_roots
from models_app.choices import DownloadState
from models_app.models import ModelFile


@dataclass
class RootUsage:
    root: str
    free: int | None
    copies: list[ModelFile] = field(default_factory=list)

    @property
    def used(self) -> int:
        """Bytes on disk: a finished copy's size, a running one's bytes so far."""
        return sum(
            copy.bytes_total if copy.state == DownloadState.READY else copy.bytes_done
            for copy in self.copies
        )


def node_storage(node: Node) -> list[RootUsage]:
    """The node's roots in its order, then any root a copy still names that the node no
    longer reports (so that nothing on disk goes unaccounted)."""
    roots = {root: RootUsage(root, root_free(node, root)) for root in storage_roots(node)}
    copies = ModelFile.objects.filter(node=node).select_related("model", "node")
    for copy in copies.order_by("storage_root", "path"):
        usage = roots.setdefault(copy.storage_root, RootUsage(copy.storage_root, None))
        usage.copies.append(copy)
    return list(roots.values())
