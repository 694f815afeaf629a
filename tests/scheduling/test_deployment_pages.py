"""The deployment pages: the list, the new-deployment form with its dry run, one
deployment with its buttons, memory bars and instances, and an instance's log tail."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from core.units import GIB
from inventory.choices import NodeStatus
from models_app.choices import DownloadState
from scheduling import actions
from scheduling.choices import DesiredState, InstanceState
from scheduling.models import Deployment, Instance, InstanceRun
from tests.factories import CatalogModelFactory, ModelFileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def create(fleet, model_7b, queued, django_capture_on_commit_callbacks):
    """Create a deployment of the 7B model through the action, placement run."""

    def make(**fields) -> Deployment:
        fields.setdefault("served_name", "seven-b")
        fields.setdefault("model", model_7b)
        with django_capture_on_commit_callbacks(execute=True):
            return actions.do_create_deployment(**fields)

    return make


def form_data(model, **overrides) -> dict:
    data = {
        "model": str(model.pk),
        "served_name": "seven-b",
        "replicas": "1",
        "n_ctx": "8192",
        "parallel": "1",
        "cache_type": "f16",
        "policy": "binpack",
        "priority": "50",
        "node_labels": "",
        "extra_options": "",
    }
    data.update(overrides)
    return data


def field_html(page: str, name: str) -> str:
    """The markup of one form field's block (label, input, errors)."""
    start = page.rindex("<div", 0, page.index(f'id="field-{name}"'))
    end = page.find('id="field-', start + 30)
    return page[start : end if end > 0 else None]


# --- the list -----------------------------------------------------------------------------


def test_the_list_shows_each_deployment_with_replicas_and_instance_states(viewer_client, create):
    deployment = create(replicas=2)
    page = viewer_client.get(reverse("scheduling:list")).content.decode()
    assert f'id="deployment-{deployment.pk}"' in page
    assert "seven-b" in page and "Seven B" in page
    assert ">0/2<" in page  # none running of two wanted
    assert "2 waiting for files" in page
    assert 'ws-connect="/ws/deployments/"' in page
    assert "New deployment" not in page


def test_operators_get_the_new_deployment_button(operator_client):
    page = operator_client.get(reverse("scheduling:list")).content.decode()
    assert reverse("scheduling:new") in page and "New deployment" in page


def test_anonymous_visitors_are_sent_to_log_in(anon_client, create):
    deployment = create()
    for url in (
        reverse("scheduling:list"),
        reverse("scheduling:new"),
        reverse("scheduling:detail", args=[deployment.pk]),
    ):
        response = anon_client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_the_nav_links_to_the_deployments(viewer_client):
    page = viewer_client.get(reverse("inventory:overview")).content.decode()
    assert f'href="{reverse("scheduling:list")}"' in page


# --- one deployment ------------------------------------------------------------------------


def test_the_detail_page_shows_settings_instances_and_memory_per_gpu(viewer_client, create):
    deployment = create(n_ctx=8192, node_labels={}, extra_options={"seed": "7"})
    instance = deployment.instances.get()
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    assert 'id="deployment-summary"' in page and "8192 tokens" in page and "seed=7" in page
    assert f'id="instance-{instance.pk}"' in page
    assert instance.node.name in page and "Waiting for files" in page
    (claim,) = instance.claims.select_related("gpu")
    assert f'id="membar-{claim.gpu_id}"' in page and "seg-ours" in page
    assert "CUDA0" in page and "estimated" in page
    assert f'ws-connect="/ws/deployments/{deployment.pk}/"' in page
    assert "<button" not in page.split('id="deployment-summary"')[1].split("</section>")[0]


def test_the_memory_bar_stacks_every_claim_on_the_gpu(viewer_client, create):
    other = create(served_name="other", only_gpus=[], allow_multi_gpu=False)
    gpu = other.instances.get().claims.get().gpu
    ours = create(served_name="ours", only_gpus=[gpu])
    page = viewer_client.get(reverse("scheduling:detail", args=[ours.pk])).content.decode()
    bar = page.split(f'id="membar-{gpu.pk}"')[1].split('class="bar-total')[0]
    assert bar.index("seg-ours") < bar.index("seg-other")  # this deployment first
    assert "other #" in bar and "ours #" in bar
    assert "seg-foreign" in bar and "seg-free" in bar


def test_the_detail_page_warns_of_oom_risk_on_its_gpus(viewer_client, create):
    deployment = create()
    gpu = deployment.instances.get().claims.get().gpu
    gpu.memory_used = gpu.memory_total - GIB // 2  # someone filled it
    gpu.save()
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    assert 'class="oom-warning"' in page and "OOM risk" in page


def test_the_overview_shows_claimed_memory_and_oom_risk(viewer_client, create):
    deployment = create()
    gpu = deployment.instances.get().claims.get().gpu
    gpu.memory_used = gpu.memory_total - GIB // 2
    gpu.save()
    page = viewer_client.get(reverse("inventory:overview")).content.decode()
    row = page.split(f'id="gpu-{gpu.pk}"')[1].split("</tr>")[0]
    assert "claimed " in row and "OOM risk" in row


def test_an_unknown_deployment_is_not_found(viewer_client):
    url = reverse("scheduling:detail", args=["00000000-0000-0000-0000-000000000000"])
    assert viewer_client.get(url).status_code == 404


def test_the_log_is_polled_only_while_an_instance_starts_or_runs(viewer_client, create, tmp_path):
    deployment = create(replicas=2)
    starting, failed = deployment.instances.order_by("created_at")
    for instance, state in ((starting, InstanceState.STARTING), (failed, InstanceState.FAILED)):
        Instance.objects.filter(pk=instance.pk).update(state=state)
        log = tmp_path / f"{instance.pk}.log"
        log.write_text("loading model\n")
        InstanceRun.objects.create(instance=instance, number=1, log_path=str(log))
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    live = page.split(f'id="log-{starting.pk}"')[1].split(">")[0]
    ended = page.split(f'id="log-{failed.pk}"')[1].split(">")[0]
    assert 'hx-trigger="every 2s"' in live
    assert reverse("scheduling:instance-log", args=[starting.pk]) in live
    assert "hx-trigger" not in ended
    assert "loading model" in page


def test_the_restart_history_lists_each_run_with_its_last_lines(viewer_client, create):
    deployment = create()
    instance = deployment.instances.get()
    InstanceRun.objects.create(
        instance=instance,
        number=1,
        log_path="/nowhere.log",
        ended_at=timezone.now(),
        exit_code=1,
        last_lines="CUDA OOM",
    )
    Instance.objects.filter(pk=instance.pk).update(
        state=InstanceState.FAILED, restart_count=1, last_error="exited with code 1"
    )
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    history = page.split("Restart history")[1]
    assert "exit code 1" in history and "<details><summary>last lines</summary>" in history
    assert "CUDA OOM" in history
    assert "exited with code 1" in page


# --- the log tail ----------------------------------------------------------------------------


def test_the_log_fragment_returns_the_last_100_lines_of_the_run(viewer_client, create, tmp_path):
    instance = create().instances.get()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.RUNNING)
    log = tmp_path / "run1.log"
    log.write_text("".join(f"line {n}\n" for n in range(150)))
    InstanceRun.objects.create(instance=instance, number=1, log_path=str(log))
    response = viewer_client.get(reverse("scheduling:instance-log", args=[instance.pk]))
    text = response.content.decode()
    assert response.status_code == 200
    assert "line 149" in text and "line 50\n" in text
    assert "line 49\n" not in text


def test_the_log_fragment_stops_the_polling_once_the_instance_ended(
    viewer_client, create, tmp_path
):
    instance = create().instances.get()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.STOPPED)
    log = tmp_path / "run1.log"
    log.write_text("bye\n")
    InstanceRun.objects.create(instance=instance, number=1, log_path=str(log))
    response = viewer_client.get(reverse("scheduling:instance-log", args=[instance.pk]))
    assert response.status_code == 286  # htmx: stop polling
    assert "bye" in response.content.decode()


def test_a_log_on_another_machine_says_where_it_is(viewer_client, create):
    instance = create().instances.get()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.RUNNING)
    InstanceRun.objects.create(instance=instance, number=1, log_path="/elsewhere/run1.log")
    text = viewer_client.get(reverse("scheduling:instance-log", args=[instance.pk])).content
    assert b"cannot be read here" in text and instance.node.name.encode() in text


# --- creating --------------------------------------------------------------------------------


def test_an_operator_creates_a_deployment_through_the_form(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    gpu = fleet["gpus"][1]
    data = form_data(
        model_7b,
        node_labels="",
        extra_options="seed=42\n\n# a comment\nchat_format=chatml",
        only_gpus=[str(gpu.pk)],
        flash_attn="on",
        cache_type="q8_0",
        replicas="2",
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("scheduling:new"), data)
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("scheduling:detail", args=[deployment.pk])
    assert deployment.n_ctx == 8192 and deployment.replicas == 2
    assert deployment.cache_type == "q8_0" and deployment.flash_attn
    assert deployment.extra_options == {"seed": "42", "chat_format": "chatml"}
    assert list(deployment.only_gpus.all()) == [gpu]
    assert deployment.created_by.username == "operator"
    instances = deployment.instances.all()
    assert len(instances) == 2
    assert all(i.claims.get().gpu == gpu for i in instances)


def test_an_htmx_submit_is_sent_to_the_new_deployment_with_hx_location(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            reverse("scheduling:new"), form_data(model_7b), HTTP_HX_REQUEST="true"
        )
    deployment = Deployment.objects.get()
    assert reverse("scheduling:detail", args=[deployment.pk]) in response["HX-Location"]


def test_node_labels_are_typed_as_key_value_pairs(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    fleet["a"].labels = {"zone": "a", "tier": "gold"}
    fleet["a"].save()
    data = form_data(model_7b, node_labels=" zone=a , tier=gold ")
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("scheduling:new"), data)
    deployment = Deployment.objects.get()
    assert deployment.node_labels == {"zone": "a", "tier": "gold"}
    assert deployment.instances.get().node == fleet["a"]


def test_the_form_lists_catalog_models_and_gpus_by_node(operator_client, fleet, model_7b):
    page = operator_client.get(reverse("scheduling:new")).content.decode()
    assert "Seven B" in page
    assert "node-a/gpu1 NVIDIA A100-SXM4-80GB" in page and "node-b/gpu0 NVIDIA L4" in page
    assert f'hx-post="{reverse("scheduling:preview")}"' in page
    assert 'hx-trigger="change delay:300ms"' in page


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"n_ctx": "65536"}, "n_ctx", "supports at most 32768"),
        ({"extra_options": "model=/etc/passwd"}, "extra_options", "not an allowed option"),
        ({"extra_options": "seed"}, "extra_options", "is not name=value"),
        ({"node_labels": "zone"}, "node_labels", "is not key=value"),
        ({"node_labels": "zone=nowhere"}, "node_labels", "No node has these labels"),
        ({"served_name": "has spaces"}, "served_name", "as clients will type it"),
        ({"parallel": "4", "backend": "llama_cpp_python"}, "parallel", "one request at a time"),
        ({"parallel": "65"}, "parallel", "less than or equal to 64"),
        ({"kind": "chat", "pooling": "mean"}, "pooling", "embedding and reranker"),
        ({"kind": "reranker", "backend": "llama_cpp_python"}, "kind", "cannot rerank"),
        ({"kind": "embedding", "pooling": "rank"}, "pooling", "reranker kind"),
        ({"cache_ram": "-1"}, "cache_ram", "greater than or equal to 0"),
        ({"cache_type": "q4_0"}, "cache_type", "needs flash attention"),
    ],
)
def test_bad_input_shows_the_error_on_its_field_and_creates_nothing(
    operator_client, fleet, model_7b, queued, overrides, field, text
):
    response = operator_client.post(reverse("scheduling:new"), form_data(model_7b, **overrides))
    assert response.status_code == 422
    block = field_html(response.content.decode(), field)
    assert "invalid" in block.split(">")[0] and 'class="errorlist' in block
    assert text in block
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_a_gpu_selector_that_matches_no_gpu_is_refused(operator_client, fleet, model_7b, queued):
    gpu = fleet["gpus"][0]
    data = form_data(model_7b, only_gpus=[str(gpu.pk)], exclude_gpus=[str(gpu.pk)])
    response = operator_client.post(reverse("scheduling:new"), data)
    block = field_html(response.content.decode(), "only_gpus")
    assert "matches no enabled GPU" in block
    assert not Deployment.objects.exists()


def test_a_taken_served_name_is_refused(operator_client, create, model_7b):
    create(served_name="seven-b")
    response = operator_client.post(reverse("scheduling:new"), form_data(model_7b))
    assert "already serves" in field_html(response.content.decode(), "served_name")
    assert Deployment.objects.count() == 1


def test_a_served_name_taken_in_another_case_is_refused_on_its_field(
    operator_client, create, model_7b
):
    create(served_name="tiny")
    data = form_data(model_7b, served_name="TINY")
    response = operator_client.post(reverse("scheduling:new"), data)
    assert "A deployment already serves &#x27;tiny&#x27;." in field_html(
        response.content.decode(), "served_name"
    )
    assert Deployment.objects.count() == 1


# --- the dry run -------------------------------------------------------------------------------


def preview(client, model, **overrides) -> str:
    response = client.post(reverse("scheduling:preview"), form_data(model, **overrides))
    assert response.status_code == 200
    return response.content.decode()


def test_the_dry_run_shows_the_node_and_gpu_one_replica_would_use(operator_client, fleet, model_7b):
    gpu = fleet["gpus"][1]
    html = preview(operator_client, model_7b, only_gpus=[str(gpu.pk)])
    assert 'class="preview-box fits"' in html
    assert '<strong class="preview-node">node-a</strong>' in html
    assert "gpu1" in html and "One GPU" in html and "single_gpu" in html
    assert "needs download" in html  # no node holds the file yet
    assert 'class="segment seg-ours" style="width:' in html
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_the_dry_run_does_not_ask_for_a_download_where_the_file_is(
    operator_client, fleet, model_7b
):
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    html = preview(operator_client, model_7b)
    assert "node-a" in html and "needs download" not in html


def test_the_dry_run_gives_the_reasons_when_nothing_fits(operator_client, fleet, model_7b):
    for gpu in fleet["gpus"]:
        gpu.memory_used = gpu.memory_total - 2 * GIB
        gpu.save()
    html = preview(operator_client, model_7b)
    assert 'class="preview-box refused"' in html and "does not fit" in html
    assert "node-a" in html and "free" in html


def test_the_dry_run_names_what_to_fix_first(operator_client, fleet, model_7b):
    html = preview(operator_client, model_7b, n_ctx="65536", served_name="")
    assert "Not checked yet" in html and "supports at most 32768" in html
    assert "served" not in html.lower()  # no name yet is fine for a dry run


def test_the_dry_run_says_when_no_node_accepts_work(operator_client, fleet, model_7b):
    for node in (fleet["a"], fleet["b"]):
        node.status = NodeStatus.MAINTENANCE
        node.save()
    html = preview(operator_client, model_7b)
    assert "does not fit" in html and "maintenance" in html


# --- permissions --------------------------------------------------------------------------------


def test_viewers_may_not_create_preview_or_change_deployments(viewer_client, create, model_7b):
    deployment = create()
    assert viewer_client.get(reverse("scheduling:new")).status_code == 403
    other = form_data(model_7b, served_name="other")
    assert viewer_client.post(reverse("scheduling:new"), other).status_code == 403
    assert viewer_client.post(reverse("scheduling:preview"), other).status_code == 403
    for action in ("stop", "start", "delete"):
        url = reverse("scheduling:action", args=[deployment.pk, action])
        assert viewer_client.post(url).status_code == 403
    scale = reverse("scheduling:scale", args=[deployment.pk])
    assert viewer_client.post(scale, {"replicas": "3"}).status_code == 403
    deployment.refresh_from_db()
    assert deployment.desired_state == DesiredState.RUNNING and deployment.replicas == 1
    assert Deployment.objects.count() == 1


# --- the buttons ---------------------------------------------------------------------------------


def test_scale_answers_the_summary_and_adds_replicas(
    operator_client, create, django_capture_on_commit_callbacks
):
    deployment = create()
    url = reverse("scheduling:scale", args=[deployment.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url, {"replicas": "3"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.startswith('<section id="deployment-summary"')
    assert 'name="replicas" min="0" max="64" value="3"' in html
    deployment.refresh_from_db()
    assert deployment.replicas == 3
    assert deployment.instances.exclude(state=InstanceState.STOPPED).count() == 3


def test_scale_beyond_the_limit_answers_the_reason(operator_client, create):
    deployment = create()
    url = reverse("scheduling:scale", args=[deployment.pk])
    html = operator_client.post(url, {"replicas": "99"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'role="alert"' in html and "64" in html
    deployment.refresh_from_db()
    assert deployment.replicas == 1


def test_stop_then_start(operator_client, create, django_capture_on_commit_callbacks):
    deployment = create()
    stop = reverse("scheduling:action", args=[deployment.pk, "stop"])
    with django_capture_on_commit_callbacks(execute=True):
        html = operator_client.post(stop, HTTP_HX_REQUEST="true").content.decode()
    assert ">Start</button>" in html and ">Stop</button>" not in html
    deployment.refresh_from_db()
    assert deployment.desired_state == DesiredState.STOPPED
    assert not deployment.instances.exclude(state=InstanceState.STOPPED).exists()

    start = reverse("scheduling:action", args=[deployment.pk, "start"])
    with django_capture_on_commit_callbacks(execute=True):
        html = operator_client.post(start, HTTP_HX_REQUEST="true").content.decode()
    assert ">Stop</button>" in html
    deployment.refresh_from_db()
    assert deployment.desired_state == DesiredState.RUNNING
    assert deployment.instances.exclude(state=InstanceState.STOPPED).count() == 1


def test_a_plain_post_of_a_button_goes_back_to_the_page(operator_client, create):
    deployment = create()
    url = reverse("scheduling:action", args=[deployment.pk, "stop"])
    response = operator_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("scheduling:detail", args=[deployment.pk])


def test_delete_stops_the_instances_and_sends_back_to_the_list(
    operator_client, create, django_capture_on_commit_callbacks
):
    deployment = create()
    url = reverse("scheduling:action", args=[deployment.pk, "delete"])
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url, HTTP_HX_REQUEST="true")
    assert reverse("scheduling:list") in response["HX-Location"]
    assert not Deployment.objects.filter(pk=deployment.pk).exists()  # nothing was running


def test_a_deleting_deployment_shows_no_buttons_but_the_reason(operator_client, create):
    deployment = create()
    instance = deployment.instances.get()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.RUNNING)
    Deployment.objects.filter(pk=deployment.pk).update(desired_state=DesiredState.DELETING)
    page = operator_client.get(reverse("scheduling:detail", args=[deployment.pk])).content
    summary = page.decode().split('id="deployment-summary"')[1].split("</section>")[0]
    assert "Being deleted" in summary and "<button" not in summary
    start = reverse("scheduling:action", args=[deployment.pk, "start"])
    html = operator_client.post(start, HTTP_HX_REQUEST="true").content.decode()
    assert "being deleted" in html


def test_an_unknown_action_is_not_found(operator_client, create):
    deployment = create()
    url = reverse("scheduling:action", args=[deployment.pk, "explode"])
    assert operator_client.post(url).status_code == 404


def test_a_model_list_is_sorted_by_name(operator_client, fleet):
    CatalogModelFactory(display_name="Zeta")
    CatalogModelFactory(display_name="Alpha")
    page = operator_client.get(reverse("scheduling:new")).content.decode()
    options = re.findall(r"<option value=\"[0-9a-f-]+\">(Alpha|Zeta)</option>", page)
    assert options == ["Alpha", "Zeta"]


# --- backends, kinds and the backends' readings --------------------------------------------

READINGS = {
    "slots": 4, "busy": 3, "deferred": 2, "tokens_per_second": 41.26,
    "prompt_tokens_per_second": 300.0, "kv_used": 0.374, "tokens_total": 900,
    "prompt_tokens_total": 5000, "at": 1_700_000_000.0,
}  # fmt: skip


def _running(instance: Instance, **fields) -> None:
    fields.setdefault("backend", "llama_server")
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.RUNNING, **fields)


def test_the_form_creates_an_embedding_deployment_with_its_pooling(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    data = form_data(model_7b, kind="embedding", pooling="mean", parallel="4", cache_ram="256")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("scheduling:new"), data)
    assert response.status_code == 302
    deployment = Deployment.objects.get()
    assert (deployment.kind, deployment.pooling, deployment.backend) == (
        "embedding", "mean", "llama_server",
    )  # fmt: skip
    assert (deployment.parallel, deployment.cache_ram) == (4, 256)


def test_the_form_creates_a_reranker(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    data = form_data(model_7b, served_name="rerank", kind="reranker", pooling="rank")
    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(reverse("scheduling:new"), data).status_code == 302
    assert Deployment.objects.get().kind == "reranker"


def test_the_form_creates_a_llama_cpp_python_deployment_with_chat_format(
    operator_client, fleet, model_7b, queued, django_capture_on_commit_callbacks
):
    data = form_data(model_7b, backend="llama_cpp_python", extra_options="chat_format=chatml")
    with django_capture_on_commit_callbacks(execute=True):
        assert operator_client.post(reverse("scheduling:new"), data).status_code == 302
    deployment = Deployment.objects.get()
    assert deployment.backend == "llama_cpp_python"
    assert deployment.extra_options == {"chat_format": "chatml"}


def test_an_option_of_the_other_backend_is_refused_naming_the_backend(
    operator_client, fleet, model_7b, queued
):
    data = form_data(model_7b, backend="llama_cpp_python", extra_options="cache_reuse=256")
    response = operator_client.post(reverse("scheduling:new"), data)
    block = field_html(response.content.decode(), "extra_options")
    assert "not an allowed option for llama_cpp_python" in block
    assert not Deployment.objects.exists()


def test_the_form_lists_the_options_of_each_backend_labelled(operator_client, fleet, model_7b):
    page = operator_client.get(reverse("scheduling:new")).content.decode()
    for field in ("backend", "kind", "pooling", "cache_ram"):
        assert f'id="field-{field}"' in page
    server = page.split('data-for-backend="llama_server"')[1].split("</small>")[0]
    python = page.split('data-for-backend="llama_cpp_python"')[1].split("</small>")[0]
    assert "llama-server" in server and "cache_reuse" in server and "chat_format" in server
    assert "llama-cpp-python" in python and "mul_mat_q" in python and "chat_format" in python
    assert "cache_reuse" not in python and "mul_mat_q" not in server
    assert '<option value="llama_server" selected>' in page


def test_the_list_shows_the_kind_backend_and_slots_in_use(viewer_client, create):
    deployment = create(kind="embedding", pooling="mean", parallel=4)
    _running(deployment.instances.get(), readings=READINGS)
    page = viewer_client.get(reverse("scheduling:list")).content.decode()
    row = page.split(f'id="deployment-{deployment.pk}"')[1].split("</tr>")[0]
    assert '<span class="badge kind embedding">embedding</span>' in row
    assert ">llama-server<" in row
    assert ">3/4<" in row and "41.3 tok/s" in row and "+2 waiting" in row


def test_a_chat_deployment_has_no_kind_badge_and_a_dash_without_readings(viewer_client, create):
    deployment = create(backend="llama_cpp_python")
    page = viewer_client.get(reverse("scheduling:list")).content.decode()
    row = page.split(f'id="deployment-{deployment.pk}"')[1].split("</tr>")[0]
    assert "badge kind" not in row and ">llama-cpp-python<" in row
    assert '<td class="load">–</td>' in row


def test_the_detail_page_shows_slots_in_use_tokens_per_second_and_kv_use(viewer_client, create):
    deployment = create(kind="reranker", pooling="rank", parallel=4, cache_ram=512)
    instance = deployment.instances.get()
    _running(instance, readings=READINGS)
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    summary = page.split('id="deployment-summary"')[1].split("</section>")[0]
    assert "badge kind reranker" in summary and "Reranker" in summary and ">rank<" in summary
    assert "llama.cpp llama-server" in summary and "512 MiB" in summary
    cell = page.split(f'id="readings-{instance.pk}"')[1].split("</td>")[0]
    assert ">3/4<" in cell and "41.3 tok/s" in cell and "KV 37%" in cell and "+2 waiting" in cell


def test_an_instance_without_readings_shows_a_dash(viewer_client, create):
    deployment = create(backend="llama_cpp_python")
    instance = deployment.instances.get()
    _running(instance, backend="llama_cpp_python")
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    cell = page.split(f'id="readings-{instance.pk}"')[1].split("</td>")[0]
    assert "reports no slots" in cell and "tok/s" not in cell


def test_readings_of_an_instance_that_no_longer_runs_are_not_shown(viewer_client, create):
    deployment = create()
    instance = deployment.instances.get()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.FAILED, readings=READINGS)
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    cell = page.split(f'id="readings-{instance.pk}"')[1].split("</td>")[0]
    assert "3/4" not in cell


def test_garbage_readings_show_a_dash_instead_of_failing(viewer_client, create):
    deployment = create()
    instance = deployment.instances.get()
    _running(instance, readings={"slots": "many", "busy": None, "tokens_per_second": [1]})
    page = viewer_client.get(reverse("scheduling:detail", args=[deployment.pk])).content.decode()
    cell = page.split(f'id="readings-{instance.pk}"')[1].split("</td>")[0]
    assert "tok/s" not in cell
