"""SegmentsApi against the emulator through the real SDK: classification, retries, timeouts, paging.

``classify`` is checked table-driven on SDK exception instances built the way the SDK builds them
(a lowered response body as the message, the ``requests`` error as the cause) and on exceptions
the SDK really raised from emulator answers. Retry and timeout behaviour is read back from the
emulator's request log, not from log text (except the one-WARNING-per-retry check).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
import segments.exceptions as sdk
from segments import SegmentsClient
from segments.utils import bitmap2file

from prelabel.emulator import Emulator, FaultRule
from prelabel.errors import AuthError, NotFoundRemoteError, RemoteError, TransientRemoteError
from prelabel.segments.client import SegmentsApi, classify
from tests.connector_helpers import (
    free_port,
    remote_settings,
    requests_matching,
    url_path,
)
from tests.fixtures.emulator import EMULATOR_API_KEY, SeededDataset, png_bytes

CLIENT_LOGGER = "prelabel.segments.transport"


# classify(): SDK exceptions as the SDK builds them --------------------------------------------


def _http_error(status: int, body: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.url = "http://127.0.0.1:1/datasets/jane/demo/"
    return requests.HTTPError(f"{status} Client Error", response=response)


def _sdk(cls: type[sdk.SegmentsError], status: int, body: str) -> sdk.SegmentsError:
    """``cls`` as ``handle_exceptions`` raises it: message = lowered body, cause = HTTPError."""
    return cls(message=body.lower(), cause=_http_error(status, body))


THROTTLED_7 = '{"detail":"Request was throttled. Expected available in 7 seconds."}'
# handle_exceptions lowers the body, then appends its hint (not lowered).
NOT_FOUND = sdk.NotFoundError(
    message='{"detail":"not found."}\n\nPossible fixes:\n- Check for typos in the dataset name\n',
    cause=_http_error(404, '{"detail":"Not found."}'),
)

CLASSIFY_CASES: list[tuple[str, BaseException, type[RemoteError], float | None]] = [
    ("500", _sdk(sdk.NetworkError, 500, "<h1>Server Error (500)</h1>"), TransientRemoteError, None),
    (
        "502",
        _sdk(sdk.NetworkError, 502, "<title>502 Bad Gateway</title>"),
        TransientRemoteError,
        None,
    ),
    ("503", _sdk(sdk.NetworkError, 503, "503 Service Unavailable"), TransientRemoteError, None),
    (
        "504 time-out",
        _sdk(sdk.TimeoutError, 504, "504 Gateway Time-out"),
        TransientRemoteError,
        None,
    ),
    ("429 throttled", _sdk(sdk.NetworkError, 429, THROTTLED_7), TransientRemoteError, 7.0),
    (
        "429 one second",
        _sdk(
            sdk.NetworkError,
            429,
            '{"detail":"Request was throttled. Expected available in 1 second."}',
        ),
        TransientRemoteError,
        1.0,
    ),
    (
        "APILimitError with hint",
        sdk.APILimitError("Request was throttled. Expected available in 2.5 seconds."),
        TransientRemoteError,
        2.5,
    ),
    (
        "APILimitError at construction",
        sdk.APILimitError("Initialization failed due to rate limiting. Please try again later."),
        TransientRemoteError,
        None,
    ),
    ("404 not found", NOT_FOUND, NotFoundRemoteError, None),
    (
        "404 invalid page",
        _sdk(sdk.NotFoundError, 404, '{"detail":"Invalid page."}'),
        NotFoundRemoteError,
        None,
    ),
    (
        "401 no credentials",
        _sdk(
            sdk.AuthenticationError,
            401,
            '{"detail":"Authentication credentials were not provided."}',
        ),
        AuthError,
        None,
    ),
    ("401 bad key", _sdk(sdk.NetworkError, 401, '{"detail":"Invalid token."}'), AuthError, None),
    (
        "403 permission",
        _sdk(
            sdk.AuthorizationError,
            403,
            '{"detail":"You do not have permission to perform this action."}',
        ),
        AuthError,
        None,
    ),
    ("403 other", _sdk(sdk.NetworkError, 403, '{"detail":"Forbidden."}'), AuthError, None),
    (
        "read timeout",
        sdk.TimeoutError("read timed out", cause=requests.ReadTimeout("read timed out")),
        TransientRemoteError,
        None,
    ),
    (
        "connection refused",
        sdk.NetworkError("connection refused", cause=requests.ConnectionError("refused")),
        TransientRemoteError,
        None,
    ),
    (
        "400 validation",
        _sdk(sdk.NetworkError, 400, '{"attributes":["\'annotations\' must be a list."]}'),
        RemoteError,
        None,
    ),
    (
        "400 already exists",
        _sdk(
            sdk.AlreadyExistsError,
            400,
            '{"detail":"A dataset with the name \'demo\' already exists."}',
        ),
        RemoteError,
        None,
    ),
    ("client-side validation", sdk.ValidationError("bad task attributes"), RemoteError, None),
    ("raw ConnectionError", requests.ConnectionError("reset by peer"), TransientRemoteError, None),
    ("raw ReadTimeout", requests.ReadTimeout("read timed out"), TransientRemoteError, None),
    ("raw HTTPError 503", _http_error(503, "unavailable"), TransientRemoteError, None),
    ("raw HTTPError 404", _http_error(404, "<Error>NoSuchKey</Error>"), NotFoundRemoteError, None),
]


@pytest.mark.parametrize(
    ("exc", "expected", "retry_after"),
    [case[1:] for case in CLASSIFY_CASES],
    ids=[case[0] for case in CLASSIFY_CASES],
)
def test_classify_maps_sdk_errors_to_prelabel_errors(
    exc: BaseException, expected: type[RemoteError], retry_after: float | None
) -> None:
    result = classify(exc)

    assert type(result) is expected
    assert getattr(result, "retry_after", None) == retry_after
    message = str(result)
    assert "\n" not in message and len(message) <= 600
    assert "possible fixes" not in message.lower()  # the SDK's hint is noise in one line


def test_classify_returns_prelabel_errors_unchanged() -> None:
    error = TransientRemoteError("already ours", retry_after=3)

    assert classify(error) is error


# classify(): exceptions the SDK really raised from emulator answers ---------------------------


@pytest.fixture
def timed_client(
    emulator: Emulator, segments_client: SegmentsClient
) -> Iterator[tuple[SegmentsClient, SegmentsApi]]:
    """The raw SDK client, with SegmentsApi's timeout adapter mounted on its sessions."""
    api = SegmentsApi(segments_client, remote_settings(emulator.url, read_timeout_s=0.3))
    yield segments_client, api
    api.close()


@pytest.mark.parametrize(
    ("rule", "expected", "retry_after"),
    [
        (FaultRule(error_rate=1.0, error_statuses=(500,)), TransientRemoteError, None),
        (FaultRule(error_rate=1.0, error_statuses=(503,)), TransientRemoteError, None),
        (FaultRule(throttle_rate=1.0, retry_after_s=3), TransientRemoteError, 3.0),
        (FaultRule(drop_rate=1.0), TransientRemoteError, None),
        (FaultRule(hang_rate=1.0, hang_s=3.0), TransientRemoteError, None),
    ],
    ids=["500", "503", "429", "dropped", "hang"],
)
def test_classify_real_sdk_errors_from_faults(
    emulator: Emulator,
    timed_client: tuple[SegmentsClient, SegmentsApi],
    rule: FaultRule,
    expected: type[RemoteError],
    retry_after: float | None,
) -> None:
    client, _ = timed_client
    client.add_dataset("demo")
    emulator.set_faults([FaultRule(**{**rule.to_dict(), "path": "/datasets/*"})])

    with pytest.raises(sdk.SegmentsError) as raised:
        client.get_dataset("jane/demo")
    result = classify(raised.value)

    assert type(result) is expected
    assert getattr(result, "retry_after", None) == retry_after
    # The timeout adapter replaced the SDK's urllib3 retries: one request, not four.
    assert len(requests_matching(emulator, "GET", "/datasets/jane/demo")) == 1


def test_classify_real_not_found_and_wrong_key(
    emulator: Emulator, timed_client: tuple[SegmentsClient, SegmentsApi]
) -> None:
    client, _ = timed_client
    with pytest.raises(sdk.SegmentsError) as missing:
        client.get_dataset("jane/nope")
    client.api_key = "not-the-key"  # the SDK reads it per request
    with pytest.raises(sdk.SegmentsError) as refused:
        client.get_user()

    assert type(classify(missing.value)) is NotFoundRemoteError
    assert type(classify(refused.value)) is AuthError


# connect() -----------------------------------------------------------------------------------


def test_connect_with_the_right_key_gives_a_working_api(
    emulator: Emulator, seeded_dataset: SeededDataset
) -> None:
    api = SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url))
    try:
        info = api.get_dataset(seeded_dataset.full_name)
    finally:
        api.close()

    assert info.full_name == seeded_dataset.full_name
    assert info.task_type == "segmentation-bitmap"
    assert [c["name"] for c in info.task_attributes["categories"]] == [
        c["name"] for c in seeded_dataset.categories
    ]
    assert "ground-truth" in info.labelsets
    assert info.samples_count in (None, len(seeded_dataset.sample_uuids))


def test_connect_with_a_wrong_key_fails_at_once_without_naming_it(emulator: Emulator) -> None:
    key = "sk-wrong-key-1234567890"
    with pytest.raises(AuthError) as raised:
        SegmentsApi.connect(key, remote_settings(emulator.url))

    assert key not in str(raised.value)
    assert emulator.url in str(raised.value)
    assert len(requests_matching(emulator, "GET", "/api_status")) == 1  # not retried


def test_connect_without_a_key_is_an_auth_error(emulator: Emulator) -> None:
    with pytest.raises(AuthError):
        SegmentsApi.connect("", remote_settings(emulator.url))

    assert emulator.requests == []


def test_connect_to_a_server_that_is_down_is_one_clear_transient_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    started = time.monotonic()

    with pytest.raises(TransientRemoteError) as raised:
        SegmentsApi.connect("some-key", remote_settings(url, retry_attempts=3))

    assert "cannot reach" in str(raised.value) and url in str(raised.value)
    assert not isinstance(raised.value.__cause__, AttributeError)
    assert time.monotonic() - started < 5


def test_connect_retries_a_throttled_probe(emulator: Emulator) -> None:
    emulator.set_faults(
        [FaultRule(path="/api_status/", throttle_rate=1.0, retry_after_s=0, times=1)]
    )

    SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url)).close()

    statuses = [r.status for r in requests_matching(emulator, "GET", "/api_status")]
    assert statuses[:2] == [429, 200]


@pytest.mark.parametrize(
    "failure",
    [
        FaultRule(path="/api_status/", error_rate=1.0, times=1),
        # urllib3 under the SDK retries a dropped connection 3 times, then the SDK crashes with
        # AttributeError: 4 drops.
        FaultRule(path="/api_status/", drop_rate=1.0, times=4),
    ],
    ids=["500", "dropped"],
)
def test_connect_retries_when_the_sdk_constructor_call_fails(
    emulator: Emulator, seeded_dataset: SeededDataset, failure: FaultRule
) -> None:
    # The first /api_status/ request (our probe) passes, the SDK constructor's then fails.
    emulator.set_faults([FaultRule(path="/api_status/", times=1), failure])

    api = SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url))
    try:
        assert api.get_dataset(seeded_dataset.full_name).full_name == seeded_dataset.full_name
    finally:
        api.close()

    statuses = [r.status for r in requests_matching(emulator, "GET", "/api_status")]
    assert statuses[0] == 200 and statuses[-2:] == [200, 200]  # probe and constructor again


def test_connect_to_something_that_is_not_the_api_says_so(emulator: Emulator) -> None:
    # /s3/ answers 404 to /s3/api_status/ but the probe URL keeps the path: a wrong --api-url.
    with pytest.raises(RemoteError) as raised:
        SegmentsApi.connect(EMULATOR_API_KEY, remote_settings(emulator.url + "s3/"))

    assert type(raised.value) is RemoteError
    assert "404" in str(raised.value) and "Segments.ai API" in str(raised.value)


def test_connect_times_out_on_a_hanging_server(emulator: Emulator) -> None:
    emulator.set_faults([FaultRule(path="/api_status/", hang_rate=1.0, hang_s=10.0)])
    started = time.monotonic()

    with pytest.raises(TransientRemoteError):
        SegmentsApi.connect(
            EMULATOR_API_KEY, remote_settings(emulator.url, read_timeout_s=0.3, retry_attempts=2)
        )

    assert time.monotonic() - started < 3  # two read timeouts of 0.3 s, not the SDK's forever
    assert len(requests_matching(emulator, "GET", "/api_status", fault="hang")) == 2


# Retries ---------------------------------------------------------------------------------------


@pytest.fixture
def api(emulator: Emulator, segments_client: SegmentsClient) -> Iterator[SegmentsApi]:
    api = SegmentsApi(segments_client, remote_settings(emulator.url))
    yield api
    api.close()


def test_each_retry_logs_one_warning_and_the_call_succeeds(
    emulator: Emulator,
    api: SegmentsApi,
    seeded_dataset: SeededDataset,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.set_faults(
        [FaultRule(path="/datasets/jane/demo/", method="GET", error_rate=1.0, times=3)]
    )

    with caplog.at_level(logging.WARNING, logger=CLIENT_LOGGER):
        info = api.get_dataset(seeded_dataset.full_name)

    assert info.full_name == seeded_dataset.full_name
    statuses = [r.status for r in requests_matching(emulator, "GET", "/datasets/jane/demo/")]
    assert len(statuses) == 4 and statuses[3] == 200
    warnings = [r for r in caplog.records if r.name == CLIENT_LOGGER]
    assert [r.levelno for r in warnings] == [logging.WARNING] * 3
    assert all("get dataset jane/demo" in r.getMessage() for r in warnings)
    assert [f"attempt {n} of 4" in r.getMessage() for n, r in enumerate(warnings, 1)] == [True] * 3


def test_retries_stop_after_retry_attempts(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    api = SegmentsApi(segments_client, remote_settings(emulator.url, retry_attempts=3))
    emulator.set_faults([FaultRule(path="/datasets/*", method="GET", error_rate=1.0)])

    with pytest.raises(TransientRemoteError):
        api.get_dataset(seeded_dataset.full_name)

    assert len(requests_matching(emulator, "GET", "/datasets/jane/demo/")) == 3


def test_permanent_errors_are_not_retried(emulator: Emulator, api: SegmentsApi) -> None:
    with pytest.raises(NotFoundRemoteError) as raised:
        api.get_dataset("jane/missing")

    assert "jane/missing" in str(raised.value)
    assert len(requests_matching(emulator, "GET", "/datasets/jane/missing")) == 1


def test_retry_wait_honours_the_servers_available_in_hint(
    emulator: Emulator, api: SegmentsApi, seeded_dataset: SeededDataset
) -> None:
    # retry_initial_s is 1 ms: only the "expected available in 1 second" hint explains a 1 s wait.
    emulator.set_faults(
        [FaultRule(path="/datasets/*", throttle_rate=1.0, retry_after_s=1, times=1)]
    )
    started = time.monotonic()

    api.get_dataset(seeded_dataset.full_name)

    assert 1.0 <= time.monotonic() - started < 3.0
    statuses = [r.status for r in requests_matching(emulator, "GET", "/datasets/jane/demo/")]
    assert statuses == [429, 200]


def test_a_hanging_server_times_out_then_fails_cleanly(
    emulator: Emulator, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    api = SegmentsApi(
        segments_client, remote_settings(emulator.url, read_timeout_s=0.3, retry_attempts=3)
    )
    emulator.set_faults([FaultRule(path="/datasets/*", hang_rate=1.0, hang_s=10.0)])
    started = time.monotonic()

    with pytest.raises(TransientRemoteError) as raised:
        api.get_dataset(seeded_dataset.full_name)

    assert time.monotonic() - started < 4
    assert len(requests_matching(emulator, "GET", "/datasets/", fault="hang")) == 3
    assert "timed out" in str(raised.value).lower() or "timeout" in str(raised.value).lower()


# put_label_once: exactly one attempt ---------------------------------------------------------


def _bitmap_attributes(client: SegmentsClient) -> dict[str, Any]:
    asset = client.upload_asset(bitmap2file(np.ones((24, 32), np.uint32)), "label.png")
    return {
        "format_version": "0.1",
        "annotations": [{"id": 1, "category_id": 1}],
        "segmentation_bitmap": {"url": asset.url},
    }


@pytest.mark.parametrize(
    "rule",
    [
        FaultRule(path="/labels/*", method="PUT", error_rate=1.0, times=1),
        FaultRule(path="/labels/*", method="PUT", throttle_rate=1.0, retry_after_s=0, times=1),
        FaultRule(path="/labels/*", method="PUT", drop_rate=1.0, times=1),
    ],
    ids=["500", "429 with Retry-After", "dropped"],
)
def test_put_label_once_makes_one_request_and_raises_transient(
    emulator: Emulator,
    api: SegmentsApi,
    segments_client: SegmentsClient,
    seeded_dataset: SeededDataset,
    rule: FaultRule,
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_attributes(segments_client)
    emulator.set_faults([rule])

    with pytest.raises(TransientRemoteError):
        api.put_label_once(uuid, "ground-truth", attributes, 0.5)

    assert len(requests_matching(emulator, "PUT", "/labels/")) == 1  # no urllib3 retry either
    assert emulator.label_write_count(uuid) == 0
    api.put_label_once(uuid, "ground-truth", attributes, 0.5)
    assert emulator.label_write_count(uuid) == 1


def test_label_state_reads_status_and_bitmap(
    api: SegmentsApi, segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_attributes(segments_client)

    before = api.label_state(uuid, "ground-truth")
    api.put_label_once(uuid, "ground-truth", attributes, 0.25)
    after = api.label_state(uuid, "ground-truth")

    assert before.status is None and before.bitmap_url is None
    assert after.status == "PRELABELED"
    assert after.bitmap_url == attributes["segmentation_bitmap"]["url"]


# Listing ---------------------------------------------------------------------------------------


def _add_samples(emulator: Emulator, n: int) -> list[str]:
    emulator.create_dataset("jane/many", categories=[{"id": 1, "name": "object"}])
    url = emulator.add_asset(png_bytes(8, 8, seed=0), "img.png")
    return emulator.add_samples(
        "jane/many",
        [{"name": f"s{i:04d}", "attributes": {"image": {"url": url}}} for i in range(n)],
    )


def _pages(emulator: Emulator) -> list[str]:
    return [r.query for r in requests_matching(emulator, "GET", "/datasets/jane/many/samples")]


@pytest.mark.parametrize(("n", "pages"), [(7, 3), (6, 3), (0, 1), (2, 1)])
def test_iter_samples_pages_through_everything_once_in_creation_order(
    emulator: Emulator, segments_client: SegmentsClient, n: int, pages: int
) -> None:
    uuids = _add_samples(emulator, n)
    api = SegmentsApi(segments_client, remote_settings(emulator.url, page_size=3))

    listed = list(api.iter_samples("jane/many", "ground-truth"))

    assert [s.uuid for s in listed] == uuids
    assert all(s.label_status is None and s.image_url for s in listed)
    queries = _pages(emulator)
    assert len(queries) == pages
    assert all("sort=created_at" in q and "per_page=3" in q for q in queries)
    if n == 6:  # a full last page: page 3 is "Invalid page." and ends the listing quietly
        assert [
            r.status for r in requests_matching(emulator, "GET", "/datasets/jane/many/samples")
        ][-1] == 404


def test_iter_samples_reports_label_status_and_survives_a_failing_page(
    emulator: Emulator, segments_client: SegmentsClient
) -> None:
    uuids = _add_samples(emulator, 5)
    emulator.write_label(uuids[3], "ground-truth", None, label_status="REVIEWED")
    api = SegmentsApi(segments_client, remote_settings(emulator.url, page_size=2))
    emulator.set_faults(
        [FaultRule(path="/datasets/jane/many/samples/", error_rate=1.0, times=2)], seed=1
    )

    listed = list(api.iter_samples("jane/many", "ground-truth"))

    assert [s.uuid for s in listed] == uuids
    assert [s.label_status for s in listed] == [None, None, None, "REVIEWED", None]


def test_iter_samples_of_a_missing_dataset_is_not_found(api: SegmentsApi) -> None:
    with pytest.raises(NotFoundRemoteError):
        list(api.iter_samples("jane/missing", "ground-truth"))


# Assets and downloads --------------------------------------------------------------------------


def test_upload_png_then_download_round_trips(emulator: Emulator, api: SegmentsApi) -> None:
    data = png_bytes(16, 8, seed=3)
    emulator.set_faults([FaultRule(path="/s3-upload/", error_rate=1.0, times=1)])

    url = api.upload_png(data, "x.png")

    assert api.download(url) == data
    assert emulator.asset_upload_count() == 1


def test_download_of_a_missing_asset_is_not_found_and_not_retried(
    emulator: Emulator, api: SegmentsApi
) -> None:
    url = emulator.url + "s3/assets/jane/nothing-here.png"

    with pytest.raises(NotFoundRemoteError):
        api.download(url)

    assert len(requests_matching(emulator, "GET", url_path(url))) == 1


def test_download_refuses_an_image_over_the_byte_limit(
    emulator: Emulator, segments_client: SegmentsClient
) -> None:
    url = emulator.add_asset(b"x" * 5000, "big.png")
    api = SegmentsApi(segments_client, remote_settings(emulator.url, max_image_bytes=1000))

    with pytest.raises(RemoteError, match="limit"):
        api.download(url)
