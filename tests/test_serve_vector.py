"""``prelabel serve`` on a ``vector`` dataset: the first sync cycle and a ``sample.created``
webhook label through the same steps as ``prelabel run`` (emulator, real SDK, an instant
stand-in model whose one segment is the left half of the image)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from segments import SegmentsClient
from segments.typing import ImageVectorLabelAttributes

from prelabel.emulator import Emulator
from tests.connector_helpers import wait_for
from tests.fixtures.emulator import png_bytes, seed_dataset_via_sdk
from tests.serve_helpers import running_service, sample_created


def assert_left_half_polygon(client: SegmentsClient, uuid: str, size: tuple[int, int]) -> None:
    label = client.get_label(uuid, labelset="ground-truth")
    assert str(getattr(label.label_status, "value", label.label_status)) == "PRELABELED"
    attributes = ImageVectorLabelAttributes.model_validate(label.attributes.model_dump())
    [annotation] = attributes.annotations
    assert annotation.type == "polygon"
    points = np.array(annotation.points)
    width, height = size
    extent = [*points.min(axis=0), *points.max(axis=0)]
    np.testing.assert_allclose(extent, [0, 0, width // 2, height], rtol=0, atol=1.0)


def test_serve_labels_a_vector_dataset_in_its_cycle_and_from_a_webhook(
    emulator: Emulator, segments_client: SegmentsClient, tmp_path: Path
) -> None:
    seeded = seed_dataset_via_sdk(segments_client, "shapes", n_images=2, task_type="vector")

    with running_service(emulator, tmp_path, (seeded.full_name,)) as running:
        for uuid in seeded.sample_uuids:  # the first cycle's
            assert_left_half_polygon(segments_client, uuid, seeded.image_size)
        asset = segments_client.upload_asset(io.BytesIO(png_bytes(40, 30, seed=9)), "late.png")
        late = segments_client.add_sample(
            seeded.full_name, "late.png", {"image": {"url": asset.url}}
        )
        body = sample_created(seeded.full_name, late.uuid)

        answer = running.deliver_signed(body, "msg_late")

        assert answer.status_code in (200, 202, 204), answer.text
        wait_for(lambda: emulator.label_write_count(late.uuid) == 1, 30, "the webhook's label")
        running.wait_idle()
    assert_left_half_polygon(segments_client, late.uuid, (40, 30))
    assert emulator.label_write_counts() == {
        (u, "ground-truth"): 1 for u in (*seeded.sample_uuids, late.uuid)
    }
