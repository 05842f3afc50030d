from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_requests_are_counted_by_route_and_status(client):
    client.get("/healthz")
    client.get("/healthz")
    client.post("/graphql", json={"query": "{ plugins { name } }"})  # 401: no key
    client.get("/no/such/path/123")
    found = samples(client)
    assert (
        found[
            (
                "cdp_http_requests_total",
                (("method", "GET"), ("route", "/healthz"), ("status", "200")),
            )
        ]
        == 2
    )
    assert (
        found[
            (
                "cdp_http_requests_total",
                (("method", "POST"), ("route", "/graphql"), ("status", "401")),
            )
        ]
        == 1
    )
    # unknown paths share one label value, so a scanner cannot blow up the series count
    assert (
        found[
            (
                "cdp_http_requests_total",
                (("method", "GET"), ("route", "<unmatched>"), ("status", "404")),
            )
        ]
        == 1
    )


def test_latency_histogram_is_exported(client):
    client.get("/healthz")
    found = samples(client)
    count = found[
        ("cdp_http_request_duration_seconds_count", (("method", "GET"), ("route", "/healthz")))
    ]
    assert count == 1
