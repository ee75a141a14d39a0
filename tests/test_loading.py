"""Loading the three models: sources, device and dtype, and the errors a user without weights sees.

All loads use the tiny models written by ``prelabel models tiny`` and go through the real
:func:`load_models`; nothing here touches the network.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

from prelabel.backends.grounded_sam.loading import (
    MODEL_SUBDIRS,
    LoadedModels,
    load_models,
    model_sources,
    resolve_dtype,
)
from prelabel.backends.loading import TINY_MARKER, resolve_device
from prelabel.config import ModelSettings
from prelabel.errors import ConfigError, ModelLoadError


def copy_models(source: Path, target: Path, *, drop_marker: bool = False) -> Path:
    shutil.copytree(source, target)
    if drop_marker:
        for sub in MODEL_SUBDIRS.values():
            (target / sub / TINY_MARKER).unlink()
    return target


def test_tiny_models_load_through_the_real_path(tiny_models: LoadedModels) -> None:
    assert type(tiny_models.grounding_dino).__name__ == "GroundingDinoForObjectDetection"
    assert type(tiny_models.sam).__name__ == "SamModel"
    assert type(tiny_models.clipseg).__name__ == "CLIPSegForImageSegmentation"
    # Without torchvision the PIL image processors must be in place.
    assert type(tiny_models.grounding_dino_processor.image_processor).__name__.endswith("Pil")
    assert type(tiny_models.sam_processor.image_processor).__name__ == "SamImageProcessorPil"
    assert type(tiny_models.clipseg_processor.image_processor).__name__ == "ViTImageProcessorPil"
    for model in (tiny_models.grounding_dino, tiny_models.sam, tiny_models.clipseg):
        assert not model.training
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert tiny_models.device == torch.device("cpu")
    assert tiny_models.dtypes == dict.fromkeys(MODEL_SUBDIRS, torch.float32)
    assert tiny_models.is_tiny


def test_tiny_models_are_flagged_with_a_warning(
    tiny_models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="prelabel.backends"):
        loaded = load_models(ModelSettings(device="cpu"), tiny_models_dir)
    assert loaded.is_tiny
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("tiny random-weight models in use: masks are meaningless" in w for w in warnings)
    sources = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    for sub in MODEL_SUBDIRS.values():
        assert str(tiny_models_dir / sub) in sources


def test_directories_without_the_marker_are_not_tiny(
    tiny_models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real_looking = copy_models(tiny_models_dir, tmp_path / "models", drop_marker=True)
    with caplog.at_level(logging.WARNING, logger="prelabel.backends"):
        loaded = load_models(ModelSettings(device="cpu"), real_looking)
    assert not loaded.is_tiny
    assert not [r for r in caplog.records if "meaningless" in r.getMessage()]


def test_one_tiny_model_among_real_ones_makes_the_set_tiny(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    mixed = copy_models(tiny_models_dir, tmp_path / "models", drop_marker=True)
    shutil.copy(tiny_models_dir / "clipseg" / TINY_MARKER, mixed / "clipseg" / TINY_MARKER)
    assert load_models(ModelSettings(device="cpu"), mixed).is_tiny


def test_configured_local_directories_load_without_models_dir(tiny_models_dir: Path) -> None:
    settings = ModelSettings(
        grounding_dino=str(tiny_models_dir / "grounding_dino"),
        sam=str(tiny_models_dir / "sam"),
        clipseg=str(tiny_models_dir / "clipseg"),
        device="cpu",
        dtype="bfloat16",
    )
    loaded = load_models(settings)
    assert loaded.dtypes == dict.fromkeys(MODEL_SUBDIRS, torch.bfloat16)
    for model in (loaded.grounding_dino, loaded.sam, loaded.clipseg):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_sources_default_to_the_configured_ids() -> None:
    assert model_sources(ModelSettings(), None) == {
        "grounding_dino": "IDEA-Research/grounding-dino-tiny",
        "sam": "facebook/sam-vit-huge",
        "clipseg": "CIDAS/clipseg-rd64-refined",
    }


def test_models_dir_overrides_every_configured_id(tmp_path: Path) -> None:
    for sub in ("grounding_dino", "sam", "clipseg"):
        (tmp_path / sub).mkdir()
    settings = ModelSettings(sam="/somewhere/else")
    assert model_sources(settings, tmp_path) == {
        "grounding_dino": str(tmp_path / "grounding_dino"),
        "sam": str(tmp_path / "sam"),
        "clipseg": str(tmp_path / "clipseg"),
    }


def test_a_missing_subdirectory_is_named_with_the_layout(tmp_path: Path) -> None:
    (tmp_path / "grounding_dino").mkdir()
    with pytest.raises(ModelLoadError) as info:
        model_sources(ModelSettings(), tmp_path)
    message = str(info.value)
    assert "sam, clipseg" in message
    assert "grounding_dino,sam,clipseg" in message
    assert "prelabel models tiny" in message


def test_models_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a directory"):
        load_models(ModelSettings(device="cpu"), tmp_path / "absent")


def test_missing_hub_weights_give_one_clear_error_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if huggingface_hub.try_to_load_from_cache("IDEA-Research/grounding-dino-tiny", "config.json"):
        pytest.skip("the real Grounding DINO is in this machine's Hugging Face cache")
    # Set after huggingface_hub was imported: the loader must still see it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_models(ModelSettings(device="cpu"))
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "Grounding DINO" in message
    assert "'IDEA-Research/grounding-dino-tiny'" in message
    assert huggingface_hub.constants.HF_HUB_CACHE in message
    assert "offline mode" in message
    for remedy in (
        "--models DIR",
        "prelabel models tiny",
        "models.grounding_dino",
        "HF_HUB_OFFLINE=1",
    ):
        assert remedy in message


def test_missing_sam_weights_mention_the_converter(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = ModelSettings(
        grounding_dino=str(tiny_models_dir / "grounding_dino"),
        sam="prelabel-tests/no-such-sam",
        device="cpu",
    )
    with pytest.raises(ModelLoadError) as info:
        load_models(settings)
    message = str(info.value)
    assert message.startswith("cannot load SAM from 'prelabel-tests/no-such-sam'")
    assert "prelabel models convert-sam" in message


def test_a_missing_local_directory_is_named(tiny_models_dir: Path, tmp_path: Path) -> None:
    absent = tmp_path / "weights" / "clipseg"
    settings = ModelSettings(
        grounding_dino=str(tiny_models_dir / "grounding_dino"),
        sam=str(tiny_models_dir / "sam"),
        clipseg=str(absent),
        device="cpu",
    )
    with pytest.raises(ModelLoadError) as info:
        load_models(settings)
    message = str(info.value)
    assert message.startswith(f"cannot load CLIPSeg from '{absent}': no such directory")
    assert f"local directory {absent}" in message


def test_a_directory_without_config_is_an_error(tiny_models_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "sam"
    empty.mkdir()
    settings = ModelSettings(
        grounding_dino=str(tiny_models_dir / "grounding_dino"), sam=str(empty), device="cpu"
    )
    with pytest.raises(ModelLoadError, match=r"cannot load SAM .*config\.json"):
        load_models(settings)


def test_a_model_of_the_wrong_kind_is_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    swapped = copy_models(tiny_models_dir, tmp_path / "models")
    shutil.rmtree(swapped / "sam")
    shutil.copytree(tiny_models_dir / "grounding_dino", swapped / "sam")
    with pytest.raises(ModelLoadError, match="holds a 'grounding-dino' model, not SAM"):
        load_models(ModelSettings(device="cpu"), swapped)


def test_incomplete_weights_are_refused(tiny_models_dir: Path, tmp_path: Path) -> None:
    broken = copy_models(tiny_models_dir, tmp_path / "models")
    weights = broken / "sam" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["mask_decoder.iou_token.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"incomplete.*mask_decoder\.iou_token\.weight"):
        load_models(ModelSettings(device="cpu"), broken)


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", ""])
def test_unknown_devices_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match="device"):
        resolve_device(name)


@pytest.mark.parametrize("role", list(MODEL_SUBDIRS))
def test_auto_dtype(monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    assert resolve_dtype("auto", torch.device("cpu"), role=role) == torch.float32
    assert resolve_dtype("auto", torch.device("mps"), role=role) == torch.float32
    # On CUDA Grounding DINO stays in float32 until a GPU comparison of boxes says otherwise.
    half = role != "grounding_dino"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = resolve_dtype("auto", torch.device("cuda"), role=role)
    assert cuda == (torch.bfloat16 if half else torch.float32)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = resolve_dtype("auto", torch.device("cuda"), role=role)
    assert cuda == (torch.float16 if half else torch.float32)


def test_explicit_dtypes() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype("float16", cuda, role="sam") == torch.float16
    assert resolve_dtype("bfloat16", cuda, role="grounding_dino") == torch.bfloat16
    assert resolve_dtype("bfloat16", cpu, role="clipseg") == torch.bfloat16
    assert resolve_dtype("float32", cuda, role="sam") == torch.float32
    with pytest.raises(ConfigError, match="unknown dtype 'half'"):
        resolve_dtype("half", cpu, role="sam")


def test_attention_uses_sdpa_where_the_model_supports_it(tiny_models: object) -> None:
    assert tiny_models.sam.config._attn_implementation == "sdpa"
    assert tiny_models.clipseg.config._attn_implementation == "sdpa"


def test_compile_wraps_the_fixed_shape_encoders(tiny_models_dir: Path) -> None:
    import torch

    models = load_models(ModelSettings(device="cpu", compile=True), tiny_models_dir)
    assert isinstance(models.sam.vision_encoder, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(models.clipseg.clip.vision_model, torch._dynamo.eval_frame.OptimizedModule)
