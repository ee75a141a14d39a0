"""The emulator driven through the real segments-ai SDK: every call the connector needs.

Assertions read state back through the SDK or the emulator, so each test fails if the emulator
stops answering the way ``shared/segments-api.md`` says the real API does.
"""

from __future__ import annotations

import ast
import io
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from segments import SegmentsClient
from segments.exceptions import (
    AlreadyExistsError,
    AuthenticationError,
    NetworkError,
    NotFoundError,
)
from segments.typing import Dataset, Label, LabelSummary
from segments.utils import bitmap2file, load_image_from_url, load_label_bitmap_from_url

from prelabel.emulator import Emulator
from tests.fixtures.emulator import (
    DEMO_CATEGORIES,
    EMULATOR_API_KEY,
    SeededDataset,
    png_bytes,
    seed_dataset_via_sdk,
)

REPO = Path(__file__).resolve().parents[1]


def _bitmap_label(client: SegmentsClient, bitmap: np.ndarray, category_ids: dict[int, int]) -> dict:
    """Upload a bitmap and return label attributes pointing at it (the connector's pattern)."""
    asset = client.upload_asset(bitmap2file(bitmap), "label.png")
    annotations = [{"id": i, "category_id": c} for i, c in sorted(category_ids.items())]
    return {
        "format_version": "0.1",
        "annotations": annotations,
        "segmentation_bitmap": {"url": asset.url},
    }


# Construction and auth ---------------------------------------------------------------------


def test_construction_checks_api_status_with_the_sdk_version(emulator: Emulator) -> None:
    SegmentsClient(EMULATOR_API_KEY, api_url=emulator.url).close()

    [record] = emulator.requests
    assert (record.method, record.path, record.status) == ("GET", "/api_status/", 200)
    assert record.query.startswith("lib_version=")


def test_api_url_path_prefix_is_ignored_like_the_sdk_does(emulator: Emulator) -> None:
    client = SegmentsClient(EMULATOR_API_KEY, api_url=emulator.url + "api/v1/")
    assert client.get_user().username == "jane"


def test_wrong_key_fails_at_construction(emulator: Emulator) -> None:
    with pytest.raises(AuthenticationError):
        SegmentsClient("not-the-key", api_url=emulator.url)
    assert emulator.requests[-1].status == 401


def test_missing_key_fails_at_construction(emulator: Emulator) -> None:
    with pytest.raises(AuthenticationError):
        SegmentsClient("", api_url=emulator.url)  # empty key: the SDK sends no header


API_ROUTES = [
    ("GET", "api_status/?lib_version=1.33.0"),
    ("GET", "user"),
    ("GET", "users/jane"),
    ("GET", "user/datasets/?per_page=10&page=1"),
    ("POST", "user/datasets/"),
    ("GET", "datasets/jane/demo/"),
    ("GET", "datasets/jane/demo/labelsets/"),
    ("POST", "datasets/jane/demo/labelsets/"),
    ("GET", "datasets/jane/demo/samples/?per_page=10&page=1&sort=name"),
    ("POST", "datasets/jane/demo/samples/"),
    ("POST", "datasets/jane/demo/samples_bulk/"),
    ("GET", "samples/{uuid}/"),
    ("GET", "labels/{uuid}/ground-truth/"),
    ("PUT", "labels/{uuid}/ground-truth/"),
    ("PATCH", "labels/{uuid}/ground-truth/"),
    ("DELETE", "labels/{uuid}/ground-truth/"),
    ("POST", "assets/"),
]


@pytest.mark.parametrize(("method", "route"), API_ROUTES)
def test_every_api_route_rejects_missing_and_wrong_keys(
    emulator: Emulator, seeded_dataset: SeededDataset, method: str, route: str
) -> None:
    url = emulator.url + route.format(uuid=seeded_dataset.sample_uuids[0])
    missing = requests.request(method, url, json={})
    wrong = requests.request(method, url, json={}, headers={"Authorization": "APIKey nope"})
    bad_scheme = requests.request(
        method, url, json={}, headers={"Authorization": f"Token {EMULATOR_API_KEY}"}
    )

    assert missing.status_code == 401
    assert missing.json() == {"detail": "Authentication credentials were not provided."}
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid token."})
    assert bad_scheme.status_code == 401
    # Nothing was written by the rejected calls.
    assert emulator.label_write_count(seeded_dataset.sample_uuids[0]) == 0


def test_sdk_maps_a_later_auth_failure_like_the_real_service(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    """After construction a wrong key is a plain NetworkError, a missing one an
    AuthenticationError: the SDK classifies by body text, not by status (spec section 4)."""
    segments_client.api_key = "revoked-key"
    with pytest.raises(NetworkError, match="invalid token") as wrong:
        segments_client.get_dataset(seeded_dataset.full_name)
    assert not isinstance(wrong.value, AuthenticationError)

    segments_client.api_key = ""
    with pytest.raises(AuthenticationError):
        segments_client.get_samples(seeded_dataset.full_name)


def test_get_user(segments_client: SegmentsClient, emulator: Emulator) -> None:
    user = segments_client.get_user()

    assert (user.username, user.is_organization) == ("jane", False)
    assert emulator.requests[-1].path == "/user"  # no trailing slash, as the SDK sends it
    with pytest.raises(NotFoundError):
        segments_client.get_user("nobody")


# Datasets and labelsets --------------------------------------------------------------------


def test_add_get_and_list_datasets(segments_client: SegmentsClient) -> None:
    created = segments_client.add_dataset(
        "street",
        description="demo",
        task_type="segmentation-bitmap-highres",
        task_attributes={"format_version": "0.1", "categories": list(DEMO_CATEGORIES)},
        category="street_scenery",
    )
    fetched = segments_client.get_dataset("jane/street")

    assert isinstance(fetched, Dataset)  # every required field validated by the SDK's model
    assert fetched.full_name == created.full_name == "jane/street"
    assert fetched.task_type == "segmentation-bitmap-highres"
    assert fetched.category == "street_scenery"
    categories = fetched.task_attributes.categories
    assert [(c.id, c.name, c.has_instances) for c in categories] == [
        (c["id"], c["name"], c["has_instances"]) for c in DEMO_CATEGORIES
    ]
    assert [ls.name for ls in fetched.labelsets] == ["ground-truth"]
    assert fetched.label_stats.TOTAL == 0
    assert [d.full_name for d in segments_client.get_datasets()] == ["jane/street"]


def test_dataset_errors_map_to_sdk_exceptions(segments_client: SegmentsClient) -> None:
    segments_client.add_dataset("demo")
    with pytest.raises(AlreadyExistsError):
        segments_client.add_dataset("demo")
    with pytest.raises(NotFoundError):
        segments_client.get_dataset("jane/missing")
    with pytest.raises(NotFoundError, match="invalid page"):
        segments_client.get_datasets(per_page=1, page=2)


def test_organization_dataset_belongs_to_the_organization(segments_client: SegmentsClient) -> None:
    dataset = segments_client.add_dataset("shared", organization="acme")

    assert dataset.full_name == "acme/shared"
    assert segments_client.get_user("acme").is_organization is True
    assert [d.full_name for d in segments_client.get_datasets("acme")] == ["acme/shared"]


def test_labelsets_list_and_add(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    segments_client.add_labelset(seeded_dataset.full_name, "predictions", "model output")

    names = [ls.name for ls in segments_client.get_labelsets(seeded_dataset.full_name)]
    assert names == ["ground-truth", "predictions"]
    labelset = segments_client.get_labelset(seeded_dataset.full_name, "predictions")
    assert (labelset.description, labelset.is_groundtruth) == ("model output", False)
    with pytest.raises(AlreadyExistsError):
        segments_client.add_labelset(seeded_dataset.full_name, "predictions")


def test_label_stats_count_ground_truth_statuses(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    first, second, _ = seeded_dataset.sample_uuids
    emulator.set_label_status(first, "ground-truth", "PRELABELED")
    emulator.set_label_status(second, "ground-truth", "LABELED")

    stats = segments_client.get_dataset(seeded_dataset.full_name).label_stats
    assert (stats.PRELABELED, stats.LABELED, stats.UNLABELED, stats.TOTAL) == (1, 1, 1, 3)


# Samples -----------------------------------------------------------------------------------


def test_add_sample_and_get_it_back(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[1]
    sample = segments_client.get_sample(uuid)

    assert sample.name == "image_001.png"
    assert sample.metadata == {"index": 1, "split": "val"}
    assert sample.dataset_full_name == seeded_dataset.full_name
    assert load_image_from_url(sample.attributes.image.url).size == seeded_dataset.image_size
    with pytest.raises(AlreadyExistsError):
        segments_client.add_sample(seeded_dataset.full_name, sample.name, {"image": {"url": "x"}})
    with pytest.raises(NotFoundError):
        segments_client.get_sample("00000000-0000-0000-0000-000000000000")


def test_sample_writes_arrive_gzipped_and_plain_json_also_works(
    emulator: Emulator, seeded_dataset: SeededDataset
) -> None:
    """The SDK gzips sample bodies (spec section 0); a plain JSON body must work as well."""
    response = requests.post(
        emulator.url + "datasets/jane/demo/samples/",
        json={"name": "plain.png", "attributes": {"image": {"url": "http://x/y.png"}}},
        headers={"Authorization": f"APIKey {EMULATOR_API_KEY}"},
    )
    broken = requests.post(
        emulator.url + "datasets/jane/demo/samples/",
        data=b"not gzip",
        headers={"Authorization": f"APIKey {EMULATOR_API_KEY}", "Content-Encoding": "gzip"},
    )

    assert response.status_code == 201
    assert response.json()["name"] == "plain.png"
    assert broken.status_code == 400


def test_add_samples_bulk_returns_existing_samples_unchanged(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    new = [{"name": "bulk_0.png", "attributes": {"image": {"url": "http://x/0.png"}}}]
    again = [{"name": "image_000.png", "attributes": {"image": {"url": "http://other"}}}]

    added = segments_client.add_samples(seeded_dataset.full_name, new + again)

    assert [s.name for s in added] == ["bulk_0.png", "image_000.png"]
    assert added[1].uuid == seeded_dataset.sample_uuids[0]
    assert added[1].attributes.image.url != "http://other"
    assert len(segments_client.get_samples(seeded_dataset.full_name)) == 4


def test_get_samples_pages_end_with_invalid_page(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    segments_client.add_samples(
        seeded_dataset.full_name,
        [{"name": f"extra_{i}.png", "attributes": {"image": {"url": "http://x"}}} for i in (1, 2)],
    )
    pages = [segments_client.get_samples("jane/demo", per_page=2, page=p) for p in (1, 2, 3)]

    assert [len(page) for page in pages] == [2, 2, 1]
    assert len({s.uuid for page in pages for s in page}) == 5
    with pytest.raises(NotFoundError, match="invalid page"):
        segments_client.get_samples("jane/demo", per_page=2, page=4)
    with pytest.raises(NotFoundError, match="invalid page"):
        segments_client.get_samples("jane/demo", per_page=5, page=2)  # exactly one full page


def test_empty_dataset_first_page_is_an_empty_list(segments_client: SegmentsClient) -> None:
    segments_client.add_dataset("empty")
    assert segments_client.get_samples("jane/empty") == []


def test_name_and_metadata_filters(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    by_name = segments_client.get_samples("jane/demo", name="_00")
    one_name = segments_client.get_samples("jane/demo", name="image_002")
    train = segments_client.get_samples("jane/demo", metadata="split:train")
    both = segments_client.get_samples("jane/demo", metadata=["split:train", "index:2"])
    none = segments_client.get_samples("jane/demo", metadata=["split:val", "index:2"])

    assert len(by_name) == 3
    assert [s.name for s in one_name] == ["image_002.png"]
    assert [s.name for s in train] == ["image_000.png", "image_002.png"]
    assert [s.name for s in both] == ["image_002.png"]
    assert none == []


def test_label_status_filter_with_unlabeled_and_comma_lists(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    first, second, third = seeded_dataset.sample_uuids
    emulator.set_label_status(first, "ground-truth", "PRELABELED")
    emulator.set_label_status(second, "ground-truth", "LABELED")

    def uuids(**kwargs: object) -> list[str]:
        return [s.uuid for s in segments_client.get_samples("jane/demo", **kwargs)]

    assert uuids(label_status="UNLABELED") == [third]
    assert uuids(label_status=["UNLABELED", "PRELABELED"]) == [first, third]
    assert uuids(label_status="LABELED") == [second]
    assert uuids(label_status="REVIEWED") == []
    with pytest.raises(NetworkError):
        uuids(label_status="prelabeled")  # sent as-is; the enum is upper case


def test_label_status_filter_uses_the_requested_labelset(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    first = seeded_dataset.sample_uuids[0]
    segments_client.add_labelset("jane/demo", "predictions")
    emulator.set_label_status(first, "predictions", "PRELABELED")

    unlabeled_gt = segments_client.get_samples("jane/demo", label_status="UNLABELED")
    unlabeled_pred = segments_client.get_samples(
        "jane/demo", labelset="predictions", label_status="UNLABELED"
    )

    assert len(unlabeled_gt) == 3
    assert first not in {s.uuid for s in unlabeled_pred}
    assert len(unlabeled_pred) == 2
    with pytest.raises(NotFoundError):
        segments_client.get_samples("jane/demo", labelset="no-such-labelset")


def test_labelset_adds_label_summary_or_full_label(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    first = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 3})
    segments_client.add_label(first, "ground-truth", attributes, score=0.75)

    summaries = segments_client.get_samples("jane/demo", labelset="ground-truth")
    full = segments_client.get_samples(
        "jane/demo", labelset="ground-truth", include_full_label=True
    )
    plain = segments_client.get_samples("jane/demo")

    assert isinstance(summaries[0].label, LabelSummary)
    assert (summaries[0].label.label_status, summaries[0].label.score) == ("PRELABELED", 0.75)
    assert summaries[1].label is None
    assert isinstance(full[0].label, Label)
    assert full[0].label.attributes.annotations[0].category_id == 3
    assert plain[0].label is None


@pytest.mark.parametrize(
    ("sort", "direction", "expected"),
    [
        ("name", "asc", ["a", "b", "c"]),
        ("name", "desc", ["c", "b", "a"]),
        ("priority", "asc", ["c", "a", "b"]),
        ("priority", "desc", ["b", "a", "c"]),
        ("created_at", "asc", ["b", "c", "a"]),
        ("created_at", "desc", ["a", "c", "b"]),
        ("gt_label__updated_at", "desc", ["c", "a", "b"]),
    ],
)
def test_sort_orders(
    segments_client: SegmentsClient,
    emulator: Emulator,
    sort: str,
    direction: str,
    expected: list[str],
) -> None:
    segments_client.add_dataset("sorted")
    uuids = {}
    for name, priority in (("b", 9), ("c", 1), ("a", 5)):  # created in this order
        sample = segments_client.add_sample(
            "jane/sorted", name, {"image": {"url": "http://x"}}, priority=priority
        )
        uuids[name] = sample.uuid
    emulator.set_label_status(uuids["a"], "ground-truth", "LABELED")
    emulator.set_label_status(uuids["c"], "ground-truth", "LABELED")  # latest update, b has none

    samples = segments_client.get_samples("jane/sorted", sort=sort, direction=direction)

    assert [s.name for s in samples] == expected


def test_unknown_sort_field_is_rejected(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    with pytest.raises(NetworkError, match="sort"):
        segments_client.get_samples("jane/demo", sort="colour")


def test_get_sample_with_labelset_and_the_malformed_signed_url_query(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    first = seeded_dataset.sample_uuids[0]
    emulator.set_label_status(first, "ground-truth", "LABELED")

    with_label = segments_client.get_sample(first, labelset="ground-truth")
    malformed = segments_client.get_sample(first, labelset="ground-truth", include_signed_url=True)

    assert emulator.requests[-1].query == "labelset=ground-truth?include_signed_urls=1"
    assert with_label.label.label_status == malformed.label.label_status == "LABELED"
    assert segments_client.get_sample(first).label is None


def test_listing_ten_thousand_samples_stays_fast(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    """The connector lists whole datasets page by page; the emulator must not be O(N^2)."""
    emulator.create_dataset("jane/big")
    emulator.add_samples(
        "jane/big",
        (
            {"name": f"s{i:05d}", "attributes": {"image": {"url": "http://x"}}}
            for i in range(10_000)
        ),
    )
    started = time.perf_counter()
    names = []
    for page in range(1, 11):
        names += [s.name for s in segments_client.get_samples("jane/big", per_page=1000, page=page)]
    elapsed = time.perf_counter() - started

    assert len(names) == len(set(names)) == 10_000
    assert names == sorted(names)
    assert elapsed < 15, f"listing 10,000 samples took {elapsed:.1f} s"


# Assets ------------------------------------------------------------------------------------


def test_upload_asset_then_anonymous_download(
    segments_client: SegmentsClient, emulator: Emulator
) -> None:
    data = png_bytes(5, 4, seed=7)
    asset = segments_client.upload_asset(io.BytesIO(data), "photo.png")
    downloaded = requests.get(asset.url)  # no Authorization header

    assert asset.filename == "photo.png"
    assert asset.url.startswith(emulator.url + "s3/assets/jane/")
    assert (downloaded.status_code, downloaded.content) == (200, data)
    assert downloaded.headers["Content-Type"] == "image/png"
    assert emulator.asset_upload_count() == 1
    upload = [r for r in emulator.requests if r.path == "/s3-upload/"]
    assert [r.status for r in upload] == [204]


def test_s3_upload_rejects_unknown_keys_and_missing_assets_404(emulator: Emulator) -> None:
    forged = requests.post(
        emulator.url + "s3-upload/",
        data={"key": "assets/jane/forged.png"},
        files={"file": io.BytesIO(b"x")},
    )
    missing = requests.get(emulator.url + "s3/assets/jane/missing.png")

    assert forged.status_code == 403
    assert missing.status_code == 404
    assert emulator.asset_upload_count() == 0


# Labels ------------------------------------------------------------------------------------


def test_bitmap_label_round_trip_with_large_ids(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    bitmap = np.zeros((24, 32), np.uint32)
    bitmap[:12] = 1  # sky (stuff)
    bitmap[12:, :10] = 70000  # a person instance with an id above 16 bits
    bitmap[12:, 20:] = 3
    attributes = _bitmap_label(segments_client, bitmap, {1: 3, 3: 2, 70000: 1})

    written = segments_client.add_label(uuid, "ground-truth", attributes, score=0.91)
    read = segments_client.get_label(uuid, "ground-truth")
    pixels = load_label_bitmap_from_url(read.attributes.segmentation_bitmap.url)

    assert written.label_type == "segmentation-bitmap"
    assert (read.label_status, read.score) == ("PRELABELED", 0.91)
    assert [(a.id, a.category_id) for a in read.attributes.annotations] == [
        (1, 3),
        (3, 2),
        (70000, 1),
    ]
    np.testing.assert_array_equal(pixels, bitmap)
    assert emulator.label_write_count(uuid) == 1


def test_label_type_follows_the_dataset_task_type(segments_client: SegmentsClient) -> None:
    segments_client.add_dataset("highres", task_type="segmentation-bitmap-highres")
    sample = segments_client.add_sample("jane/highres", "a", {"image": {"url": "http://x"}})
    attributes = _bitmap_label(segments_client, np.zeros((2, 2), np.uint32), {})

    label = segments_client.add_label(sample.uuid, "ground-truth", attributes)

    assert label.label_type == "segmentation-bitmap-highres"


def test_update_label_patches_only_given_fields(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 4})
    segments_client.add_label(uuid, "ground-truth", attributes, score=0.5)

    updated = segments_client.update_label(uuid, "ground-truth", label_status="LABELED")

    assert updated.label_status == "LABELED"
    assert updated.score == 0.5
    assert updated.attributes.annotations[0].category_id == 4
    assert emulator.label_write_count(uuid) == 2
    assert [r.method for r in emulator.requests if r.path.startswith("/labels/")] == [
        "PUT",
        "PATCH",
    ]
    with pytest.raises(NotFoundError):
        segments_client.update_label(seeded_dataset.sample_uuids[1], "ground-truth", score=1.0)


def test_delete_label_makes_the_sample_unlabeled_again(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 1})
    segments_client.add_label(uuid, "ground-truth", attributes)

    segments_client.delete_label(uuid, "ground-truth")

    with pytest.raises(NotFoundError):
        segments_client.get_label(uuid, "ground-truth")
    unlabeled = segments_client.get_samples("jane/demo", label_status="UNLABELED")
    assert uuid in {s.uuid for s in unlabeled}


def test_add_label_validation(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 1})

    with pytest.raises(NetworkError, match="label_status"):
        segments_client.add_label(uuid, "ground-truth", attributes, label_status="UNLABELED")
    with pytest.raises(NotFoundError):
        segments_client.add_label(uuid, "no-such-labelset", attributes)
    with pytest.raises(NotFoundError):
        segments_client.add_label(
            "00000000-0000-0000-0000-000000000000", "ground-truth", attributes
        )
    assert emulator.label_write_count(uuid) == 0
    assert emulator.get_label(uuid) is None


def test_add_label_into_a_second_labelset_leaves_ground_truth_alone(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    segments_client.add_labelset("jane/demo", "predictions")
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 2})

    segments_client.add_label(uuid, "predictions", attributes, score=0.3)

    assert segments_client.get_label(uuid, "predictions").score == 0.3
    assert emulator.get_label(uuid, "ground-truth") is None
    assert emulator.label_write_counts() == {(uuid, "predictions"): 1}


# Human edits and persistence ---------------------------------------------------------------


def test_human_edits_are_visible_to_the_sdk_but_not_counted_as_writes(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    uuid = seeded_dataset.sample_uuids[0]
    attributes = _bitmap_label(segments_client, np.ones((24, 32), np.uint32), {1: 1})
    segments_client.add_label(uuid, "ground-truth", attributes)

    emulator.set_label_status(uuid, "ground-truth", "LABELING_IN_PROGRESS", by="annotator")
    in_progress = segments_client.get_label(uuid, "ground-truth")
    emulator.write_label(uuid, "ground-truth", None, label_status="REVIEWED")

    assert (in_progress.label_status, in_progress.updated_by) == (
        "LABELING_IN_PROGRESS",
        "annotator",
    )
    assert (
        in_progress.attributes.segmentation_bitmap.url == attributes["segmentation_bitmap"]["url"]
    )
    assert segments_client.get_label(uuid, "ground-truth").label_status == "REVIEWED"
    assert emulator.label_write_count(uuid) == 1
    assert emulator.set_label_status(uuid, "ground-truth", "UNLABELED") is None
    with pytest.raises(ValueError, match="unknown label status"):
        emulator.set_label_status(uuid, "ground-truth", "DONE")


def test_sqlite_state_survives_a_restart_on_another_port(tmp_path: Path) -> None:
    db = tmp_path / "emulator.sqlite"
    with Emulator(EMULATOR_API_KEY, db_path=db) as first:
        client = SegmentsClient(EMULATOR_API_KEY, api_url=first.url)
        seeded = seed_dataset_via_sdk(client, n_images=2)
        attributes = _bitmap_label(client, np.full((24, 32), 70000, np.uint32), {70000: 1})
        client.add_label(seeded.sample_uuids[0], "ground-truth", attributes, score=0.4)
        first_port = first.port

    with Emulator(EMULATOR_API_KEY, db_path=db) as second:
        client = SegmentsClient(EMULATOR_API_KEY, api_url=second.url)
        samples = client.get_samples(seeded.full_name, labelset="ground-truth")
        label = client.get_label(seeded.sample_uuids[0], "ground-truth")
        pixels = load_label_bitmap_from_url(label.attributes.segmentation_bitmap.url)
        image = load_image_from_url(samples[1].attributes.image.url)

        assert second.port != first_port
        assert [s.uuid for s in samples] == list(seeded.sample_uuids)
        assert samples[0].label.score == 0.4
        assert second.url in label.attributes.segmentation_bitmap.url
        assert int(pixels[0, 0]) == 70000
        assert image.size == seeded.image_size
        assert second.label_write_count(seeded.sample_uuids[0]) == 1


def test_in_memory_state_does_not_survive(emulator: Emulator) -> None:
    emulator.create_dataset("jane/once")
    with Emulator(EMULATOR_API_KEY) as other:
        client = SegmentsClient(EMULATOR_API_KEY, api_url=other.url)
        with pytest.raises(NotFoundError):
            client.get_dataset("jane/once")


def test_connector_and_pipeline_modules_do_not_import_the_emulator() -> None:
    """The emulator is test and trial infrastructure: only its CLI command (lazily) and the
    demo front-end (``prelabel demo``, a run on an in-process emulator) may import it."""
    package = REPO / "prelabel"
    allowed = {package / "cli" / "emulator.py", package / "demo.py"}
    offenders = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "emulator") or path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "prelabel.emulator" or n.startswith("prelabel.emulator.") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cleanup_and_update_calls(
    segments_client: SegmentsClient, seeded_dataset: SeededDataset, emulator: Emulator
) -> None:
    first, second, _ = seeded_dataset.sample_uuids
    emulator.set_label_status(first, "ground-truth", "LABELED")

    updated = segments_client.update_dataset("jane/demo", description="renamed")
    moved = segments_client.update_sample(second, priority=3, metadata={"k": "v"})
    segments_client.delete_sample(first)

    assert updated.description == "renamed"
    assert segments_client.get_dataset("jane/demo").description == "renamed"
    assert (moved.priority, moved.metadata) == (3, {"k": "v"})
    assert emulator.get_label(first) is None  # labels go with their sample
    assert [s.uuid for s in segments_client.get_samples("jane/demo", sort="priority")][-1] == second
    with pytest.raises(NotFoundError):
        segments_client.get_sample(first)
    segments_client.delete_dataset("jane/demo")
    with pytest.raises(NotFoundError):
        segments_client.get_dataset("jane/demo")
