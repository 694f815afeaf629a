"""Adding models to the catalog: list a hub repo's GGUF files, read the chosen model's
header remotely (before any download), record its files with sizes and sha256.

Sources are resolved once, when the model is added: a hub model is pinned to the
commit its revision pointed to then, so every later download gets the same bytes.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.db import IntegrityError, transaction
from huggingface_hub import get_token

from inventory.models import Node
from models_app import estimate_service
from models_app.actions import storage_roots
from models_app.choices import SourceKind
from models_app.estimate_service import EstimateInputError, ModelSource
from models_app.fetch_guard import FetchRefused, check_url
from models_app.gguf import ModelFacts
from models_app.gguf.split import shard_locations
from models_app.models import CatalogModel, has_credentials
from models_app.transfer import (
    GgufModel,
    HfFile,
    InvalidSource,
    NotFound,
    TransferError,
    Unauthorized,
    Unreachable,
    list_gguf_models,
    resolve_hf_file,
    resolve_url,
)

MAX_LISTED = 500
REQUIRED = "This field is required."
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CatalogError(Exception):
    """Input that cannot become a catalog entry; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, field: str = "", status: int = 422, existing: Any = None):
        super().__init__(message)
        self.message, self.field, self.status, self.existing = message, field, status, existing


def _transfer_error(error: TransferError, field: str) -> CatalogError:
    if isinstance(error, InvalidSource):
        return CatalogError(str(error), field, 422)
    if isinstance(error, NotFound):
        return CatalogError(str(error), field, 404)
    if isinstance(error, Unauthorized):
        return CatalogError(str(error), field, 403)
    if isinstance(error, Unreachable):  # says which hub and why; nothing was added
        return CatalogError(f"{error}. Try again later.", field, 502)
    return CatalogError(f"The source could not be reached: {error}", field, 502)


@dataclass(frozen=True)
class HubChoice:
    """A model of a repo listing, as the add form offers it."""

    name: str
    first: str
    shards: int
    size: int
    complete: bool


def hub_models(repo_id: str, revision: str = "main") -> list[HubChoice]:
    """The GGUF models of ``repo_id`` (split models as one), largest last."""
    try:
        models = list_gguf_models(repo_id.strip(), revision=revision, token=get_token())
    except TransferError as error:
        raise _transfer_error(error, "hf_repo") from error
    if not models:
        raise CatalogError(f"{repo_id} @ {revision} has no .gguf files.", "hf_repo", 404)
    choices = [_choice(model) for model in models[:MAX_LISTED]]
    return sorted(choices, key=lambda c: (c.size, c.name))


def _choice(model: GgufModel) -> HubChoice:
    size = sum(info.size or 0 for info in model.files)
    first = model.files[0].path if model.files else model.missing[0]
    return HubChoice(model.name, first, len(model.files), size, model.complete)


def _find(models: list[GgufModel], filename: str) -> GgufModel:
    for model in models:
        if filename in (model.name, *(info.path for info in model.files), *model.missing):
            return model
    raise CatalogError(f"The repo has no GGUF file {filename!r} at this revision.", "hf_file", 404)


def add_hf_model(
    repo_id: str, filename: str, revision: str = "main", user: Any = None, display_name: str = ""
) -> CatalogModel:
    """Add a hub model (every shard of a split one); refuses incomplete and known models."""
    repo_id, filename, revision = repo_id.strip(), filename.strip(), (revision.strip() or "main")
    for field, value in (("hf_repo", repo_id), ("hf_file", filename)):
        if not value:
            raise CatalogError(REQUIRED, field)
    try:
        listing = list_gguf_models(repo_id, revision=revision, token=get_token())
        model = _find(listing, filename)
        if model.missing:
            missing = ", ".join(model.missing)
            raise CatalogError(f"{model.name} lacks shards in the repo: {missing}.", "hf_file")
        first = resolve_hf_file(HfFile(repo_id, model.files[0].path, revision, token=get_token()))
    except TransferError as error:
        raise _transfer_error(error, "hf_repo") from error
    commit = first.commit or ""
    facts = _facts(
        ModelSource(hf_repo=repo_id, hf_file=model.files[0].path, revision=commit), first.size
    )
    files = [
        {"name": info.path, "size": info.size or 0, "sha256": info.sha256 or ""}
        for info in model.files
    ]
    entry = CatalogModel(
        display_name=display_name.strip() or _display_name(repo_id, model.name),
        source_kind=SourceKind.HF,
        hf_repo=repo_id,
        hf_filename=model.files[0].path,
        revision=revision,
        commit=commit,
    )
    return _save(entry, files, facts, user)


CREDENTIALS_REFUSED = (
    "A URL with a user name or password is not accepted: it would be stored and shown to "
    "everyone who can read the catalog. Use a link without credentials (a public or signed "
    "URL); for private Hugging Face repos add them from the hub with HF_TOKEN set."
)


def add_url_model(
    url: str, user: Any = None, display_name: str = "", sha256: str = ""
) -> CatalogModel:
    """Add a model served at a plain http(s) URL (one file)."""
    url, sha256 = url.strip(), sha256.strip().lower()
    if not url:
        raise CatalogError(REQUIRED, "url")
    if has_credentials(url):
        raise CatalogError(CREDENTIALS_REFUSED, "url")
    name = posixpath.basename(unquote(urlsplit(url).path))
    if not name.lower().endswith(".gguf"):
        raise CatalogError("The URL must name a .gguf file.", "url")
    if sha256 and not _SHA256.match(sha256):
        # else the typo shows only when the finished download fails verification
        raise CatalogError("A sha256 is 64 hexadecimal digits.", "sha256")
    try:
        check_url(url)  # before any request: no address that is not fetched from
    except FetchRefused as error:
        raise CatalogError(error.message, "url") from error
    try:
        remote = resolve_url(url, sha256=sha256 or None)
    except TransferError as error:
        raise _transfer_error(error, "url") from error
    facts = _facts(ModelSource(url=url), remote.size)
    entry = CatalogModel(
        display_name=display_name.strip() or name.removesuffix(".gguf"),
        source_kind=SourceKind.URL,
        url=url,
    )
    files = [{"name": name, "size": remote.size or 0, "sha256": remote.sha256 or ""}]
    return _save(entry, files, facts, user)


def add_path_model(node: Node, path: str, user: Any = None, display_name: str = "") -> CatalogModel:
    """Add a model already on a node's disk (every shard of a split one), inside one of
    that node's storage roots. Its header is read now, so the file must be readable
    from this process too (this machine, or storage the node shares with it)."""
    path = posixpath.normpath(path.strip()) if path.strip() else ""
    if not path:
        raise CatalogError(REQUIRED, "path")
    if not posixpath.isabs(path) or not path.lower().endswith(".gguf"):
        raise CatalogError("Give the absolute path of a .gguf file on the node.", "path")
    roots = storage_roots(node)
    if not any(path.startswith(root.rstrip("/") + "/") for root in roots):
        shown = ", ".join(roots) or "none reported"
        raise CatalogError(
            f"The file must lie inside a storage root of {node.name} ({shown}).", "path"
        )
    shards = _local_shards(path)
    facts = _facts(ModelSource(path=shards[0]))
    files = [
        {"name": Path(shard).name, "size": Path(shard).stat().st_size, "sha256": ""}
        for shard in shards
    ]
    entry = CatalogModel(
        display_name=display_name.strip() or Path(shards[0]).name.removesuffix(".gguf"),
        source_kind=SourceKind.PATH,
        path=shards[0],
        path_node=node,
    )
    return _save(entry, files, facts, user)


def _local_shards(path: str) -> list[str]:
    """The model's shard paths (one for a single file), each checked to be readable here
    and inside a storage root once symlinks are resolved."""
    shards = shard_locations(path)
    try:
        for shard in shards:
            estimate_service.inside_storage_root(shard)
    except EstimateInputError as error:
        raise CatalogError(
            f"{error.message} (the header is read before the model is saved, so the file "
            "must be readable from the web process)",
            "path",
        ) from error
    return shards


def _facts(source: ModelSource, size: int | None = None) -> ModelFacts:
    try:
        return estimate_service.load_facts(source, size=size)
    except EstimateInputError as error:
        field = "path" if source.path else "hf_file" if source.hf_repo else "url"
        raise CatalogError(error.message, field) from error


def _display_name(repo_id: str, name: str) -> str:
    return f"{repo_id.split('/')[-1]} · {posixpath.basename(name).removesuffix('.gguf')}"


def _save(
    entry: CatalogModel, files: list[dict[str, Any]], facts: ModelFacts, user: Any
) -> CatalogModel:
    entry.files = files
    entry.size_bytes = sum(int(f["size"]) for f in files)
    entry.facts = facts.to_dict()
    entry.architecture = facts.architecture
    entry.quantization = facts.file_type or facts.dominant_tensor_type or ""
    entry.parameter_count = facts.parameter_count
    entry.context_length = facts.context_length or 0
    entry.created_by = user if user is not None and user.is_authenticated else None
    entry.full_clean(validate_constraints=False)  # the database says 409, below
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError:
        existing = _same_source(entry)
        raise CatalogError(
            f"This model is already in the catalog as {existing}.", status=409, existing=existing
        ) from None
    return entry


def _same_source(entry: CatalogModel) -> CatalogModel | None:
    if entry.source_kind == SourceKind.HF:
        return CatalogModel.objects.filter(
            source_kind=SourceKind.HF,
            hf_repo=entry.hf_repo,
            hf_filename=entry.hf_filename,
            revision=entry.revision,
        ).first()
    if entry.source_kind == SourceKind.PATH:
        return CatalogModel.objects.filter(
            source_kind=SourceKind.PATH, path_node=entry.path_node, path=entry.path
        ).first()
    return CatalogModel.objects.filter(source_kind=entry.source_kind, url=entry.url).first()
