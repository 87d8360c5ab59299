"""``GET /v1/models/{id}``: what OpenAI clients' ``models.retrieve`` asks for (it was a 404 for every model)."""

from __future__ import annotations


def test_a_served_model_is_its_list_entry_and_another_is_a_404(api):
    client, daemon, _ = api
    (entry,) = client.get("/v1/models").json()["data"]
    one = client.get(f"/v1/models/{entry['id']}")
    assert one.status_code == 200 and one.json() == entry
    missing = client.get("/v1/models/gpt-4/turbo")
    assert missing.status_code == 404
    assert missing.json()["error"] | {"message": None} == {"message": None, "type": "not_found_error",
                                                         "param": "model", "code": "unknown_model"}
    assert "x-request-id" not in missing.headers  # not a request: nothing recorded
