"""The daemon app's HTTP accounting: bounded `route` labels for `controlplane_http_requests_total`."""

from __future__ import annotations

import pytest

from controlplane.live.daemon_app import ROUTES, route_label


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_known_route_is_its_own_label(path):
    assert route_label(path) == path


@pytest.mark.parametrize(("path", "label"), [
    ("/v1/requests/req-7", "/v1/requests/{id}"),
    ("/v1/requests/anything-at-all", "/v1/requests/{id}"),
    ("/v1/requests/", "other"),
    ("/v1/requests/req-7/more", "other"),
    ("/v1/models/tiny-llama", "/v1/models/{id}"),
    ("/v1/models/meta-llama/Llama-3-8B", "/v1/models/{id}"),  # a model's name may hold a slash
    ("/v1/models/", "other"),
    ("/v1/nope", "other"),
    ("/", "other"),
])
def test_a_path_with_an_id_is_counted_under_its_template_and_the_rest_as_other(path, label):
    assert route_label(path) == label
