"""Categories -> prompts: thing/stuff split, name-matched options, every broken rule an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from prelabel.config import CategoryOptions, PipelineSettings
from prelabel.errors import TaxonomyError
from prelabel.taxonomy import (
    Category,
    build_taxonomy,
    categories_from_task_attributes,
    load_categories_file,
    split_phrases,
)

DEFAULTS = PipelineSettings(box_threshold=0.3, text_threshold=0.25, mask_threshold=0.4)
CATS = [
    Category(id=1, name="person", has_instances=True),
    Category(id=2, name="car", has_instances=True),
    Category(id=3, name="sky"),
    Category(id=4, name="road_surface", has_instances=False),
]


def test_things_and_stuff_follow_has_instances() -> None:
    tax = build_taxonomy(CATS, {}, DEFAULTS)
    assert [p.name for p in tax.things] == ["person", "car"]
    assert [p.name for p in tax.stuff] == ["sky", "road_surface"]
    assert tax.stuff[1].phrases == ("road surface",)
    assert tax.things[0].option("box_threshold") == 0.3
    assert tax.stuff[0].option("mask_threshold") == 0.4


def test_options_matched_by_name_set_prompt_thresholds_and_ignore() -> None:
    options = {
        "person": CategoryOptions(prompt="Person . pedestrian", box_threshold=0.5),
        "sky": CategoryOptions(mask_threshold=0.7),
        "car": CategoryOptions(ignore=True),
    }
    tax = build_taxonomy(CATS, options, DEFAULTS)
    person = tax.things[0]
    assert person.phrases == ("person", "pedestrian")
    assert person.option("box_threshold") == 0.5
    assert person.option("text_threshold") == 0.25
    assert [p.name for p in tax.things] == ["person"]
    assert tax.stuff[0].option("mask_threshold") == 0.7
    # ignored categories stay known (exports list every category)
    assert tax.category(2).name == "car"


@pytest.mark.parametrize(
    ("categories", "options", "message"),
    [
        (CATS, {"bicycle": CategoryOptions()}, "unknown category 'bicycle'"),
        ([Category(1, "a"), Category(1, "b")], {}, "id 1 is used twice"),
        ([Category(1, "a"), Category(2, "a")], {}, "name 'a' is used twice"),
        ([Category(0, "void")], {}, r"ids must be 1\.\.2\^24-1"),
        ([Category(2**24, "big")], {}, r"ids must be 1\.\.2\^24-1"),
        ([Category(1, "a")], {"a": CategoryOptions(prompt=" . ")}, "empty prompt"),
        ([Category(1, "a")], {"a": CategoryOptions(ignore=True)}, "nothing to predict"),
    ],
)
def test_broken_rules_raise_with_reason(
    categories: list[Category], options: dict[str, CategoryOptions], message: str
) -> None:
    with pytest.raises(TaxonomyError, match=message):
        build_taxonomy(categories, options, DEFAULTS)


def test_split_phrases_normalises() -> None:
    assert split_phrases("  Traffic_Light .  stop   sign.") == ("traffic light", "stop sign")


def test_categories_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cats.yaml"
    path.write_text(
        "categories:\n"
        "  - {id: 1, name: person, has_instances: true, color: [220, 20, 60],\n"
        "     prompt: person . man}\n"
        "  - {id: 2, name: sky, ignore: true}\n"
    )
    categories, options = load_categories_file(path)
    assert categories == [
        Category(1, "person", True, (220, 20, 60)),
        Category(2, "sky", False, None),
    ]
    assert options["person"].prompt == "person . man"
    assert options["sky"].ignore is True


def test_categories_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "cats.yaml"
    path.write_text("categories:\n  - {id: one, name: person}\n")
    with pytest.raises(TaxonomyError, match=r"categories\.0\.id"):
        load_categories_file(path)
    path.write_text("categories:\n  - {id: 1, name: person, promt: typo}\n")
    with pytest.raises(TaxonomyError, match="promt"):
        load_categories_file(path)


def test_task_attributes_parsed() -> None:
    cats = categories_from_task_attributes(
        {
            "format_version": "0.1",
            "categories": [
                {"id": 1, "name": "car", "has_instances": True, "color": [1.0, 2.0, 3.0]},
                {"id": 2, "name": "road"},
            ],
        }
    )
    assert cats == [Category(1, "car", True, (1, 2, 3)), Category(2, "road", False, None)]
    with pytest.raises(TaxonomyError, match="lacks an id"):
        categories_from_task_attributes({"categories": [{"name": "x"}]})


def test_shipped_configs_are_valid() -> None:
    configs = Path(__file__).resolve().parent.parent / "configs"
    files = sorted(configs.glob("*categories*.yaml"))
    assert len(files) >= 2
    for path in files:
        categories, options = load_categories_file(path)
        tax = build_taxonomy(categories, options, DEFAULTS)
        assert tax.things and tax.stuff, path
