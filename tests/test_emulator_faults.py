"""Fault injection: each fault looks to the real SDK the way the real service's would.

Expected SDK reactions are those of ``shared/segments-api.md`` sections 0 and 4: a 429 with
``Retry-After`` is retried 3 times by urllib3 for GET/PUT/DELETE but not POST/PATCH, other errors
are not retried, every HTTP error after construction becomes ``NetworkError``, and the SDK has no
timeout of its own. Request counts come from the emulator's log, not from log text.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from segments import SegmentsClient
from segments.exceptions import APILimitError, NetworkError
from segments.utils import bitmap2file

from prelabel.emulator import Emulator, FaultInjector, FaultRule
from tests.fixtures.emulator import EMULATOR_API_KEY, SeededDataset

AUTH = {"Authorization": f"APIKey {EMULATOR_API_KEY}"}


def _label_attributes(client: SegmentsClient) -> dict:
    asset = client.upload_asset(bitmap2file(np.ones((24, 32), np.uint32)), "label.png")
    return {
        "format_version": "0.1",
        "annotations": [{"id": 1, "category_id": 1}],
        "segmentation_bitmap": {"url": asset.url},
    }


def _statuses(emulator: Emulator, path: str, method: str | None = None) -> list[int | None]:
    """Statuses of the logged requests to ``path`` (``None``: no answer), oldest first."""
    return [
        r.status
        for r in emulator.requests
        if r.path == path and (method is None or r.method == method)
    ]


# Server errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_become_network_error_without_retry(
    emulator: Emulator, segments_client: SegmentsClient, status: int
) -> None:
    segments_client.add_dataset("demo")
    emulator.set_faults([FaultRule(path="/datasets/*", error_rate=1.0, error_statuses=(status,))])

    with pytest.raises(NetworkError) as error:
        segments_client.get_dataset("jane/demo")

    assert not isinstance(error.value, APILimitError)
    assert _statuses(emulator, "/datasets/jane/demo/") == [status]  # no Retry-After: no retry


def test_error_faults_spare_other_routes_and_methods(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    emulator.set_faults([FaultRule(path="/labels/*", method="PUT", error_rate=1.0)])

    assert segments_client.get_dataset("jane/demo").full_name == "jane/demo"
    attributes = _label_attributes(segments_client)
    with pytest.raises(NetworkError):
        segments_client.add_label(seeded_dataset.sample_uuids[0], "ground-truth", attributes)
    assert emulator.label_write_count(seeded_dataset.sample_uuids[0]) == 0


def test_times_limits_a_rule_to_the_next_n_requests(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    emulator.set_faults([FaultRule(path="/datasets/jane/demo/", error_rate=1.0, times=2)])

    for _ in range(2):
        with pytest.raises(NetworkError):
            segments_client.get_dataset("jane/demo")
    assert segments_client.get_dataset("jane/demo").name == "demo"
    assert [r.fault for r in emulator.requests if r.path == "/datasets/jane/demo/"] == [
        "error",
        "error",
        None,
    ]


# Throttling --------------------------------------------------------------------------------


def test_throttled_answer_has_retry_after_and_the_drf_body(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(throttle_rate=1.0, retry_after_s=7)])

    response = requests.get(emulator.url + "user", headers=AUTH)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == {"detail": "Request was throttled. Expected available in 7 seconds."}


def test_throttled_get_is_retried_three_times_by_the_sdk(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    emulator.set_faults([FaultRule(method="GET", throttle_rate=1.0, retry_after_s=0)])

    with pytest.raises(NetworkError, match="throttled") as error:
        segments_client.get_samples("jane/demo")

    assert not isinstance(error.value, APILimitError)  # "throttled" only counts on 2xx bodies
    assert _statuses(emulator, "/datasets/jane/demo/samples/", "GET") == [429] * 4


def test_transient_throttling_of_get_and_put_is_invisible_to_the_caller(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _label_attributes(segments_client)
    emulator.set_faults(
        [
            FaultRule(path="/datasets/*", method="GET", throttle_rate=1, retry_after_s=0, times=2),
            FaultRule(path="/labels/*", method="PUT", throttle_rate=1, retry_after_s=0, times=1),
        ]
    )

    samples = segments_client.get_samples("jane/demo")
    label = segments_client.add_label(uuid, "ground-truth", attributes)

    assert len(samples) == 3
    assert label.label_status == "PRELABELED"
    assert _statuses(emulator, "/datasets/jane/demo/samples/", "GET") == [429, 429, 200]
    assert _statuses(emulator, f"/labels/{uuid}/ground-truth/") == [429, 201]
    assert emulator.label_write_count(uuid) == 1


def test_throttled_post_and_patch_are_not_retried(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    segments_client.add_label(uuid, "ground-truth", _label_attributes(segments_client))
    emulator.set_faults([FaultRule(method="POST,PATCH", throttle_rate=1.0, retry_after_s=0)])

    with pytest.raises(NetworkError, match="throttled"):
        segments_client.add_sample("jane/demo", "new.png", {"image": {"url": "http://x"}})
    with pytest.raises(NetworkError, match="throttled"):
        segments_client.update_label(uuid, "ground-truth", label_status="LABELED")

    assert _statuses(emulator, "/datasets/jane/demo/samples/", "POST") == [201, 201, 201, 429]
    assert _statuses(emulator, f"/labels/{uuid}/ground-truth/") == [201, 429]
    assert emulator.get_label(uuid)["label_status"] == "PRELABELED"


def test_throttling_at_construction_is_an_api_limit_error(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(path="/api_status/", throttle_rate=1.0, retry_after_s=0)])

    with pytest.raises(APILimitError):
        SegmentsClient(EMULATOR_API_KEY, api_url=emulator.url)


# Dropped and hung connections --------------------------------------------------------------


def test_dropped_get_fails_after_the_sdk_three_retries(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    emulator.set_faults([FaultRule(path="/samples/*", drop_rate=1.0)])

    with pytest.raises(NetworkError):
        segments_client.get_sample(seeded_dataset.sample_uuids[0])

    records = [r for r in emulator.requests if r.path.startswith("/samples/")]
    assert [(r.status, r.fault) for r in records] == [(None, "drop")] * 4


def test_dropped_post_is_not_retried(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    """urllib3 only retries read errors for idempotent methods: a lost POST answer is final."""
    emulator.set_faults([FaultRule(path="/datasets/*/samples/", method="POST", drop_rate=1.0)])

    with pytest.raises(NetworkError):
        segments_client.add_sample("jane/demo", "new.png", {"image": {"url": "http://x"}})

    assert _statuses(emulator, "/datasets/jane/demo/samples/", "POST") == [201, 201, 201, None]


def test_hung_request_times_out_a_client_that_sets_a_timeout(emulator: Emulator) -> None:
    """The SDK passes no timeout (it would wait forever); a raw request with one gives up."""
    emulator.set_faults([FaultRule(path="/user", hang_rate=1.0)])

    started = time.perf_counter()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(emulator.url + "user", headers=AUTH, timeout=0.3)

    assert time.perf_counter() - started < 2
    assert [(r.status, r.fault) for r in emulator.requests] == [(None, "hang")]
    emulator.clear_faults()
    assert requests.get(emulator.url + "user", headers=AUTH, timeout=2).status_code == 200


def test_bounded_hang_closes_the_connection_without_an_answer(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(path="/user", hang_rate=1.0, hang_s=0.2, times=1)])

    started = time.perf_counter()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(emulator.url + "user", headers=AUTH, timeout=5)  # POST: not retried

    assert 0.2 <= time.perf_counter() - started < 4


def test_stop_releases_hung_requests_promptly(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(hang_rate=1.0)])
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(emulator.url + "user", headers=AUTH, timeout=0.2)

    started = time.perf_counter()
    emulator.stop()

    assert time.perf_counter() - started < 2


# Latency and determinism -------------------------------------------------------------------


def test_latency_is_added_only_where_configured(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    emulator.set_faults([FaultRule(path="/datasets/*/samples/", method="GET", latency_s=0.25)])

    started = time.perf_counter()
    segments_client.get_samples("jane/demo")
    slow = time.perf_counter() - started
    started = time.perf_counter()
    segments_client.get_dataset("jane/demo")
    fast = time.perf_counter() - started

    assert slow >= 0.25
    assert fast < 0.2


def _fault_sequence(seed: int) -> list[str | None]:
    with Emulator(EMULATOR_API_KEY) as server:
        server.set_faults([FaultRule(error_rate=0.3, throttle_rate=0.2, retry_after_s=0)], seed)
        for _ in range(30):
            requests.post(server.url + "assets/", headers=AUTH, json={"filename": "a.png"})
        return [r.fault for r in server.requests]


def test_same_seed_gives_the_same_fault_sequence() -> None:
    first, again, other = _fault_sequence(11), _fault_sequence(11), _fault_sequence(12)

    assert first == again
    assert first != other
    assert {"error", "throttle", None} <= set(first)


def test_injector_picks_rules_in_order_and_by_method() -> None:
    injector = FaultInjector(seed=3)
    injector.configure(
        [
            FaultRule(path="re:^/labels/.+/ground-truth/$", method="put", error_rate=1.0),
            FaultRule(path="/labels/*", latency_s=0.5),
        ]
    )

    assert injector.decide("PUT", "/labels/u/ground-truth/").kind == "error"
    assert injector.decide("GET", "/labels/u/ground-truth/").latency_s == 0.5
    assert injector.decide("PUT", "/labels/u/predictions/").kind is None
    assert injector.decide("GET", "/samples/u/").latency_s == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"error_rate": 1.5},
        {"error_rate": 0.6, "drop_rate": 0.6},
        {"latency_s": -1},
        {"path": "re:("},
        {"times": -1},
    ],
)
def test_invalid_fault_rules_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        FaultRule(**bad)


# Runtime control over HTTP (for an emulator running in another process) --------------------


def test_faults_can_be_changed_over_the_side_channel(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    control = emulator.url + "_emulator/faults"
    rule = {"path": "/datasets/*", "method": "GET", "error_rate": 1.0, "error_statuses": [503]}

    set_response = requests.post(control, json={"rules": [rule], "seed": 5})
    with pytest.raises(NetworkError):
        segments_client.get_dataset("jane/demo")
    shown = requests.get(control).json()
    requests.delete(control)
    recovered = segments_client.get_dataset("jane/demo")

    assert set_response.status_code == 200
    assert shown["seed"] == 5
    assert shown["rules"][0]["error_statuses"] == [503]
    assert recovered.name == "demo"
    assert _statuses(emulator, "/datasets/jane/demo/") == [503, 200]
    assert requests.post(control, json={"rules": [{"eror_rate": 1}]}).status_code == 400


def test_side_channel_is_never_faulted_logged_or_authenticated(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(error_rate=1.0)])

    stats = requests.get(emulator.url + "_emulator/stats")

    assert stats.status_code == 200
    assert stats.json() == {"requests": 0, "asset_uploads": 0, "label_writes": []}
    assert emulator.requests == []


def test_side_channel_stats_requests_and_human_label_edits(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    segments_client.add_label(uuid, "ground-truth", _label_attributes(segments_client))

    human = requests.put(
        emulator.url + f"_emulator/labels/{uuid}/ground-truth/",
        json={"label_status": "LABELING_IN_PROGRESS", "by": "annotator"},
    )
    stats = requests.get(emulator.url + "_emulator/stats").json()
    log = requests.get(emulator.url + "_emulator/requests").json()
    requests.delete(emulator.url + "_emulator/requests")

    assert human.status_code == 200
    assert segments_client.get_label(uuid, "ground-truth").label_status == "LABELING_IN_PROGRESS"
    assert stats["asset_uploads"] == 4  # 3 images + 1 bitmap
    assert stats["label_writes"] == [{"sample_uuid": uuid, "labelset": "ground-truth", "count": 1}]
    assert stats["requests"] == len(log)
    assert {"method": "PUT", "path": f"/labels/{uuid}/ground-truth/", "query": ""} in [
        {k: r[k] for k in ("method", "path", "query")} for r in log
    ]
    assert [r.path for r in emulator.requests] == [f"/labels/{uuid}/ground-truth/"]
