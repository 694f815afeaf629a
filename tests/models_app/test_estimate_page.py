"""The estimate page: a form whose result htmx swaps as settings change; a GET never
makes the server fetch a URL."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from core.units import GIB
from tests.factories import GpuFactory, NodeFactory
from tests.gguf.http_server import serve_files

PAGE = "/models/estimate/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def query(model: str, **extra: object) -> dict[str, object]:
    params: dict[str, object] = {
        "model": model,
        "n_ctx": 2048,
        "n_parallel": 1,
        "n_batch": 2048,
        "n_ubatch": 512,
        "cache_type_k": "f16",
        "cache_type_v": "f16",
        "n_gpu_layers": -1,
        "mmap": "on",
        "margin_mib": 0,
    }
    params.update(extra)
    return params


def test_anonymous_visitors_are_sent_to_the_login_page(anon_client):
    response = anon_client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_the_empty_page_offers_the_models_in_the_storage_roots(viewer_client, tiny_model):
    response = viewer_client.get(PAGE)
    html = response.content.decode()
    assert response.status_code == 200
    assert "No estimate yet" in html
    assert f'<option value="{tiny_model}">' in html


def test_it_draws_a_bar_per_device_for_the_chosen_gpus(viewer_client, tiny_model):
    node = NodeFactory(name="box")
    gpu = GpuFactory(node=node, index=0, memory_total=24 * GIB, memory_used=0)
    GpuFactory(node=node, index=1, enabled=False)
    response = viewer_client.get(PAGE, query(str(tiny_model), gpus=[str(gpu.pk)]))
    html = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r'data-device="([^"]+)"', html) == ["CUDA0", "CPU"]
    assert "box/gpu0" in html
    assert 'class="segment weights"' in html and 'class="segment overhead"' in html
    assert 'class="free-line"' in html
    assert "Most GPU layers at this context" in html
    assert html.count('name="gpus"') == 1  # the disabled GPU is not offered


def test_htmx_requests_get_only_the_result(viewer_client, tiny_model):
    response = viewer_client.get(PAGE, query(str(tiny_model)), **HTMX)
    html = response.content.decode()
    assert html.startswith('<section id="estimate-result"')
    assert "<html" not in html
    assert 'data-device="CPU"' in html


def test_more_context_shows_a_bigger_kv_cache(viewer_client, tiny_model):
    def kv_mib(n_ctx: int) -> int:
        html = viewer_client.get(PAGE, query(str(tiny_model), n_ctx=n_ctx), **HTMX)
        cells = re.search(r"<tr><td>CPU</td>(.*?)</tr>", html.content.decode()).group(1)
        return int(re.findall(r'class="num">(?:<strong>)?([\d,]+)', cells)[1].replace(",", ""))

    assert kv_mib(4096) == 2 * kv_mib(2048) == 8


def test_a_too_small_gpu_is_flagged_and_the_plan_offloads_part(viewer_client, tiny_model):
    response = viewer_client.get(PAGE, query(str(tiny_model), extra_gpus="0.44"), **HTMX)
    html = response.content.decode()
    assert "does not fit" in html
    assert 'class="bar-row over"' in html


def test_bad_input_is_listed_in_the_result(viewer_client, tiny_model):
    response = viewer_client.get(
        PAGE, query(str(tiny_model), tensor_split="a,b", cache_type_v="q8_0"), **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "No estimate" in html
    assert "Tensor split: Give numbers separated by commas" in html


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tensor_split": "1e308,1e308", "extra_gpus": "24,24"}, "Tensor split: Each tensor split"),
        ({"tensor_split": "1e31,1", "extra_gpus": "24,24"}, "Tensor split: Each tensor split"),
        ({"extra_gpus": "1e30"}, "Other GPUs: Each free GiB must be at most 1,048,576"),
        ({"extra_gpus": "1e308"}, "Other GPUs: Each free GiB must be at most"),
    ],
)
def test_huge_numbers_are_listed_as_bad_input_not_a_server_error(
    viewer_client, tiny_model, extra, message
):
    response = viewer_client.get(PAGE, query(str(tiny_model), **extra), **HTMX)
    assert response.status_code == 200
    assert message in response.content.decode()


def test_huge_tensor_split_shares_with_inventory_gpus_are_refused(viewer_client, tiny_model):
    node = NodeFactory(name="gpu-node")
    gpus = [str(GpuFactory(node=node, index=i, memory_used=0).pk) for i in range(2)]
    extra = {"tensor_split": "1e308,1e308", "gpus": gpus}
    response = viewer_client.get(PAGE, query(str(tiny_model), **extra), **HTMX)
    assert response.status_code == 200
    assert "Each tensor split must be at most" in response.content.decode()


def test_a_quantized_v_cache_without_flash_attention_is_explained(viewer_client, tiny_model):
    html = viewer_client.get(PAGE, query(str(tiny_model), cache_type_v="q8_0"), **HTMX)
    assert "requires flash attention" in html.content.decode()


def test_a_path_outside_the_storage_roots_is_refused(viewer_client, tiny_model):
    html = viewer_client.get(PAGE, query("/etc/passwd"), **HTMX).content.decode()
    assert "inside a storage root" in html


def test_viewers_may_not_make_the_server_fetch_urls(viewer_client):
    response = viewer_client.get(PAGE, query("https://example.org/model.gguf"), **HTMX)
    assert response.status_code == 403


def test_the_navigation_links_the_page(viewer_client):
    assert f'href="{PAGE}"' in viewer_client.get("/").content.decode()


def test_a_get_never_makes_the_server_fetch_a_url(operator_client, tiny_model):
    with serve_files(tiny_model.parent) as (base, state):
        url = f"{base}/files/{tiny_model.name}"
        html = operator_client.get(PAGE, query(url), **HTMX).content.decode()
        page = operator_client.get(PAGE, query(url)).content.decode()
    assert state.requests == []
    assert "press <strong>Estimate</strong>" in html
    assert f'value="{url}"' in page and 'method="post"' in page


def test_a_post_with_the_csrf_token_reads_the_url(operator_user, tiny_model):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    with serve_files(tiny_model.parent) as (base, state):
        url = f"{base}/files/{tiny_model.name}"
        assert client.post(PAGE, query(url), **HTMX).status_code == 403  # no token
        assert state.requests == []
        page = client.get(PAGE, query(url))
        token = page.cookies["csrftoken"].value
        response = client.post(PAGE, {**query(url), "csrfmiddlewaretoken": token}, **HTMX)
    assert response.status_code == 200
    assert state.requests
    assert "bar-row" in response.content.decode()
    pushed = response["HX-Push-Url"]
    assert pushed.startswith(PAGE + "?") and "csrfmiddlewaretoken" not in pushed


def test_a_post_to_a_private_address_shows_the_generic_refusal(operator_client, settings):
    settings.GPUFLEET_FETCH_ALLOW = []
    html = operator_client.post(PAGE, query("http://169.254.169.254/m.gguf"), **HTMX)
    assert "does not fetch from" in html.content.decode()
