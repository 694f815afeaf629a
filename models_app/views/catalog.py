"""The catalog pages: the list of models with where they fit and where they are, adding a
model (type a repo id, pick one of its GGUF files, see its facts, save), and asking for
a download to a node.

Adding reaches the hub or a URL from the server, so it is for operators only.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from core.access import can_operate, require_operator
from inventory.models import Node
from models_app import actions, catalog, estimate_service
from models_app.catalog_forms import AddModelForm, DownloadForm
from models_app.fleet_fit import node_fits
from models_app.models import CatalogModel, ModelFile


def _nodes() -> list[Node]:
    return list(Node.objects.prefetch_related("gpus").order_by("name"))


@require_GET
def catalog_page(request: HttpRequest) -> HttpResponse:
    copies = ModelFile.objects.select_related("node").order_by("node__name")
    models = CatalogModel.objects.prefetch_related(Prefetch("copies", queryset=copies))
    nodes = _nodes()
    rows = [{"model": m, "fits": node_fits(m, nodes)} for m in models]
    context = {"rows": rows, "can_operate": can_operate(request.user), "form": DownloadForm()}
    return render(request, "models_app/catalog.html", context)


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)  # type: ignore[attr-defined]


@require_http_methods(["GET", "POST"])
def add_model(request: HttpRequest) -> HttpResponse:
    require_operator(request.user, "change the catalog or start downloads")
    if request.method == "GET":
        return render(request, "models_app/model_add.html", {"form": AddModelForm()})
    form = AddModelForm(request.POST)
    if form.is_valid():
        try:
            model = _add(request, form.cleaned_data)
            return _redirect(request, reverse("models_app:catalog") + f"#model-{model.pk}")
        except catalog.CatalogError as error:
            field = error.field if error.field in form.fields else None
            form.add_error(field, error.message)
    status = 200 if request.htmx else 422  # type: ignore[attr-defined]
    return render(request, "models_app/model_add.html", {"form": form}, status=status)


def _add(request: HttpRequest, data: dict[str, Any]) -> CatalogModel:
    if data["source"] == "hf":
        return catalog.add_hf_model(
            data["hf_repo"], data["hf_file"], data["revision"], request.user, data["display_name"]
        )
    return catalog.add_url_model(data["url"], request.user, data["display_name"], data["sha256"])


@require_GET
def hub_files(request: HttpRequest) -> HttpResponse:
    """The GGUF models of the typed repo, to pick one (an htmx fragment)."""
    require_operator(request.user, "change the catalog or start downloads")
    repo = request.GET.get("hf_repo", "").strip()
    revision = request.GET.get("revision", "").strip() or "main"
    context: dict[str, Any] = {"repo": repo, "revision": revision}
    if repo:
        try:
            context["choices"] = catalog.hub_models(repo, revision)
        except catalog.CatalogError as error:
            context["error"] = error.message
    return render(request, "models_app/_hub_files.html", context)


@require_GET
def model_facts(request: HttpRequest) -> HttpResponse:
    """The picked file's GGUF facts and the GPUs that could hold it, before saving."""
    require_operator(request.user, "change the catalog or start downloads")
    source = estimate_service.ModelSource(
        hf_repo=request.GET.get("hf_repo", "").strip(),
        hf_file=request.GET.get("hf_file", "").strip(),
        revision=request.GET.get("revision", "").strip() or "main",
    )
    context: dict[str, Any] = {}
    try:
        facts = estimate_service.load_facts(source)
        draft = CatalogModel(facts=facts.to_dict(), context_length=facts.context_length or 0)
        context |= {"facts": facts, "fits": node_fits(draft, _nodes())}
    except estimate_service.EstimateInputError as error:
        context["error"] = error.message
    return render(request, "models_app/_facts_preview.html", context)


@require_POST
def request_download(request: HttpRequest, model_id: object) -> HttpResponse:
    require_operator(request.user, "change the catalog or start downloads")
    model = get_object_or_404(CatalogModel, pk=model_id)
    form = DownloadForm(request.POST, prefix=str(model.pk))
    if form.is_valid():
        try:
            actions.do_request_download(
                model, form.cleaned_data["node"], form.cleaned_data["download_path"], request.user
            )
            return _redirect(request, reverse("models_app:downloads"))
        except actions.DownloadRefused as error:
            field = error.field if error.field in ("download_path",) else None
            form.add_error(field, error.message)
    context = {"model": model, "form": form}
    status = 200 if request.htmx else 422  # type: ignore[attr-defined]
    return render(request, "models_app/_download_form.html", context, status=status)
