"""Settings for a run, loaded from a YAML config file and overridden by command-line flags.

All settings are frozen pydantic models: a typo in a config key is an error that names the key
(``extra="forbid"``), not a silently ignored option. Defaults follow the reference
Grounded-SAM + CLIPSeg recipe and are documented in ``configs/default.yaml``.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prelabel.errors import ConfigError

#: The files of ``configs/`` that ship inside the package (``prelabel/configs`` links to
#: ``configs/`` in a checkout; pyproject.toml's package-data copies them into the wheel).
SHIPPED_CONFIGS = (
    "default.yaml",
    "coco-panoptic-categories.yaml",
    "street-scene-categories.yaml",
)

DeviceName = Literal["auto", "cpu", "cuda", "mps"] | str
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
StuffMethod = Literal["seed", "regions"]


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelDtypes(FrozenModel):
    """Weight dtype per model, for ``models.dtype: {grounding_dino: float32, sam: bfloat16}``.

    Per model because the models differ in what half precision does to them: Grounding DINO's
    deformable attention samples its feature maps at box-derived positions, where bf16's 8-bit
    mantissa moves boxes (and on the CPU turns them into NaN), while SAM's and CLIPSeg's masks
    are thresholded maps that tolerate it.
    """

    grounding_dino: DtypeName = "auto"
    sam: DtypeName = "auto"
    clipseg: DtypeName = "auto"
    sam2_video: DtypeName = "auto"
    sam3: DtypeName = "auto"


class ModelSettings(FrozenModel):
    """Which model back-end runs, where its models come from and where they run.

    Each id is a Hugging Face id or a local directory saved with ``save_pretrained``.
    ``dtype`` is one name for all models or a :class:`ModelDtypes` per model.
    """

    #: The model back-end (``prelabel.backends``): ``grounded_sam`` (Grounding DINO, SAM and
    #: CLIPSeg) or ``sam3``. Checked against the registry when the dataset is checked.
    backend: str = "grounded_sam"
    #: grounded_sam's detector: Grounding DINO, or any checkpoint transformers loads with
    #: AutoModelForZeroShotObjectDetection and the Grounding DINO processor (MM Grounding DINO,
    #: LLMDet).
    grounding_dino: str = "IDEA-Research/grounding-dino-tiny"
    sam: str = "facebook/sam-vit-huge"
    clipseg: str = "CIDAS/clipseg-rd64-refined"
    #: SAM 2 video tracker, loaded only when a sequence is predicted.
    sam2_video: str = "facebook/sam2.1-hiera-large"
    #: SAM 3, for ``backend: sam3`` (gated on Hugging Face: the SAM License applies).
    sam3: str = "facebook/sam3"
    #: sam3: phrases per detector call (K). The image's features are expanded to K rows, so
    #: memory grows with K, not with the taxonomy; results are the same for any K.
    sam3_prompt_batch: int = Field(default=8, ge=1, le=256)
    device: DeviceName = "auto"
    dtype: DtypeName | ModelDtypes = "auto"
    #: torch.compile the fixed-shape image encoders (grounded_sam: SAM, CLIPSeg vision). Pays
    #: off on a GPU over many images; the first images are slow while it compiles.
    compile: bool = False

    def dtype_for(self, role: str) -> DtypeName:
        """The dtype setting of one model (``grounding_dino``, ``sam``, ``clipseg``,
        ``sam2_video``, ``sam3``)."""
        if isinstance(self.dtype, ModelDtypes):
            value: DtypeName = getattr(self.dtype, role)
            return value
        return self.dtype


class CategoryOptions(FrozenModel):
    """Per-category overrides; ``None`` means "use the pipeline default".

    The keys are flat, as in a categories file. ``prompt`` and ``ignore`` apply to every
    back-end; each threshold is read by some back-ends only (each back-end's spec lists them,
    and setting one the chosen back-end does not read is an error naming that back-end).
    """

    prompt: str | None = None
    #: grounded_sam: Grounding DINO's box and text gates.
    box_threshold: float | None = Field(default=None, ge=0, le=1)
    text_threshold: float | None = Field(default=None, ge=0, le=1)
    #: grounded_sam, ``stuff_method: regions`` only; the seed method has one
    #: background_threshold.
    mask_threshold: float | None = Field(default=None, ge=0, le=1)
    #: sam3: an instance is kept when its score is strictly above this.
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    ignore: bool = False

    def thresholds(self) -> dict[str, float]:
        """The numeric options this category sets (``None`` ones left out)."""
        return {key: getattr(self, key) for key in THRESHOLD_KEYS if getattr(self, key) is not None}


#: The per-category numeric options, each with a pipeline-wide default of the same name in
#: :class:`PipelineSettings`.
THRESHOLD_KEYS = ("box_threshold", "text_threshold", "mask_threshold", "score_threshold")


class PipelineSettings(FrozenModel):
    """Thresholds and knobs of the zero-shot pipeline (see ``configs/default.yaml``)."""

    box_threshold: float = Field(default=0.3, ge=0, le=1)
    text_threshold: float = Field(default=0.25, ge=0, le=1)
    #: sam3: instances scoring at most this are dropped (per category: ``score_threshold``).
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    #: How stuff masks are made. ``seed``: the segments-ai/panoptic-segment-anything demo's
    #: algorithm (CLIPSeg argmax against a background level, up to ``num_samples_factor``
    #: probability-weighted SAM points per category, SAM decides every pixel); ``regions``:
    #: a few interior points per thresholded CLIPSeg region (``mask_threshold``,
    #: ``points_per_region``, ``min_region_fraction``, ``max_regions_per_category``).
    stuff_method: StuffMethod = "seed"
    #: seed: a pixel gets a stuff category only where that category's probability (CLIPSeg's
    #: for the points, SAM's for the mask) is the highest and above this level. sam3: the same
    #: rule on SAM 3's semantic maps.
    background_threshold: float = Field(default=0.1, ge=0, le=1)
    #: seed: side of the square each category's CLIPSeg pixels are eroded with before points
    #: are drawn (keeps points off blurry edges); 0 = no erosion.
    shrink_kernel: int = Field(default=20, ge=0)
    #: seed: SAM points drawn for the largest stuff category; others get their share by size.
    num_samples_factor: int = Field(default=1000, ge=0)
    #: regions: CLIPSeg sigmoid probability above which a pixel is a rough stuff candidate.
    mask_threshold: float = Field(default=0.4, ge=0, le=1)
    #: IoU above which two boxes of one category are the same object.
    nms_iou: float = Field(default=0.5, ge=0, le=1)
    #: IoU above which two boxes of different categories are one object seen twice.
    cross_category_iou: float = Field(default=0.9, ge=0, le=1)
    #: regions: SAM point prompts sampled in each connected CLIPSeg region.
    points_per_region: int = Field(default=3, ge=1, le=64)
    #: regions: CLIPSeg regions smaller than this fraction of the image get no point prompts.
    min_region_fraction: float = Field(default=0.002, ge=0, le=1)
    #: regions: at most this many regions per stuff category get point prompts, the largest first;
    #: bounds the SAM decoder batch when CLIPSeg's map is speckled.
    max_regions_per_category: int = Field(default=8, ge=1)
    #: Segments smaller than this many pixels (at the original size) are dropped.
    min_area: int = Field(default=100, ge=0)
    #: Longest side the models see; larger images are downscaled, masks return full size.
    max_image_side: int = Field(default=2048, ge=64)
    #: Decompression-bomb guard: images with more pixels are refused before decoding.
    max_image_pixels: int = Field(default=120_000_000, ge=1)
    #: Detections kept per image at most, highest score first (bounds the SAM batch).
    max_detections: int = Field(default=100, ge=1)
    #: Seeds the random choices (seed: the stuff points, one generator per category).
    seed: int = Field(default=0, ge=0)


class SequenceSettings(FrozenModel):
    """How image sequences are labeled: things detected on keyframes, tracked by SAM 2 between.

    See README, "Image sequences: tracks that keep their ids", for the algorithm.
    """

    #: Things are detected (Grounding DINO + SAM) on frame 0 and every this many frames; frames
    #: between only track them. 1 = detect on every frame.
    keyframe_interval: int = Field(default=10, ge=1)
    #: On a keyframe a detection continues a live track of its category when their masks'
    #: IoU is at least this; otherwise it starts a new track.
    match_iou: float = Field(default=0.5, gt=0, le=1)


class VectorSettings(FrozenModel):
    """How a panoptic map becomes boxes and polygons for ``bboxes`` / ``vector`` datasets.

    See README, "Box and polygon datasets", and shared/segments-api.md section 12.
    """

    #: Where a thing's box comes from: the detector's box where the back-end gives one (else
    #: the mask's), or always the tight box around the thing's pixels in the panoptic map.
    box_source: Literal["mask", "detector"] = "mask"
    #: Connected parts of a mask smaller than this many pixels get no polygon.
    min_area: int = Field(default=16, ge=1)
    #: Douglas-Peucker tolerance in pixels: a polygon's vertices stay within this distance of
    #: the mask's outline (tens of points per object, not one per boundary pixel).
    tolerance: float = Field(default=1.0, ge=0)
    #: Stuff categories (sky, road) as polygons too, or only things.
    stuff: Literal["polygons", "skip"] = "polygons"
    #: A ``number`` attribute that receives the detection score, on the categories that
    #: declare it (e.g. ``confidence``); ``None``: no per-object score.
    score_attribute: str | None = None
    #: What an ``image-vector-sequence`` track is drawn as in each frame (the editor
    #: interpolates boxes between keyframes, never polygons).
    sequence_type: Literal["bbox", "polygon"] = "bbox"


class RemoteSettings(FrozenModel):
    """How prelabel talks to Segments.ai: timeouts, retries, paging, download limits.

    The SDK itself sets no timeout and retries nothing on POST (shared/segments-api.md section
    0); every call prelabel makes goes through these limits instead. Image reads from S3 and
    GCS buckets (prelabel.storage) use the same timeouts, retries and size limit.
    """

    api_url: str = "https://api.segments.ai/"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    #: Attempts per call, the first included; transient failures only.
    retry_attempts: int = Field(default=6, ge=1)
    retry_initial_s: float = Field(default=1.0, ge=0)
    retry_max_s: float = Field(default=60.0, ge=0)
    #: Samples per listing page; the SDK authors saw 502s on large pages.
    page_size: int = Field(default=500, ge=1, le=1000)
    #: Images larger than this are refused before they are fully downloaded.
    max_image_bytes: int = Field(default=200_000_000, ge=1)


class WorkerSettings(FrozenModel):
    """How a run spreads its work: I/O threads around one inference stage.

    ``overlapped`` (default) downloads and decodes images ahead of inference and uploads and
    writes labels behind it, in thread pools with bounded queues, so API and storage latency
    does not leave the model idle. ``sequential`` does one sample at a time (debugging, and the
    baseline the throughput benchmark compares against).
    """

    engine: Literal["overlapped", "sequential"] = "overlapped"
    #: Threads downloading and decoding images ahead of inference.
    fetch_workers: int = Field(default=4, ge=1, le=64)
    #: Decoded images waiting for inference at most (bounds memory).
    prefetch: int = Field(default=8, ge=1, le=256)
    #: Images per Grounding DINO and SAM encoder call (overlapped engine). Above 1 helps a GPU;
    #: on a CPU it gains nothing. Prefetch should be at least this.
    batch_size: int = Field(default=1, ge=1, le=64)
    #: Threads encoding, uploading and writing labels behind inference.
    deliver_workers: int = Field(default=4, ge=1, le=64)
    #: Predictions waiting for upload at most (bounds memory).
    deliver_queue: int = Field(default=8, ge=1, le=256)
    #: A worker's claim on a sample (see prelabel.state.store) lapses after this long, so samples of
    #: a killed worker are picked up again; longer than one sample can take.
    lease_s: float = Field(default=1800.0, gt=0)
    #: Failures of a sample (not counting server trouble) after which it is parked: left alone
    #: by later runs and cycles until ``--retry-failed``, so a bad image is not retried and
    #: logged forever.
    max_attempts: int = Field(default=3, ge=1)


class Settings(FrozenModel):
    """Everything a run is configured with."""

    models: ModelSettings = ModelSettings()
    pipeline: PipelineSettings = PipelineSettings()
    sequence: SequenceSettings = SequenceSettings()
    vector: VectorSettings = VectorSettings()
    remote: RemoteSettings = RemoteSettings()
    worker: WorkerSettings = WorkerSettings()
    #: Overrides per category name (prompt, thresholds, ignore).
    categories: dict[str, CategoryOptions] = Field(default_factory=dict)


def load_settings(path: Path | None) -> Settings:
    """Read a YAML config file; ``None`` gives the defaults."""
    if path is None:
        return Settings()
    data = read_yaml(path)
    try:
        return Settings.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None


def read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def describe_validation_error(exc: ValidationError, model: type[BaseModel] = Settings) -> str:
    """One line per problem, each naming the key path, e.g. ``pipeline.min_area: ...``; an
    unknown key also gets the closest valid one (``did you mean 'box_threshold'?``)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(model, err["loc"])
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _did_you_mean(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`` (did you mean 'x'?)`` with the closest key valid where ``loc`` ends, else the keys."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            continue  # a dict key (a category's name) or a union branch: stay on the model
        inner = _model_in(field.annotation)
        if inner is None:
            return ""
        model = inner
    valid = sorted(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (valid keys: {', '.join(valid)})"


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The settings model an annotation holds: itself, a dict's values, a union's member."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):
        inner = _model_in(arg)
        if inner is not None:
            return inner
    return None


def with_overrides(
    settings: Settings, *, api_url: str | None = None, device: str | None = None
) -> Settings:
    """``settings`` with the command line's ``--api-url`` and ``--device`` applied."""
    if api_url:
        remote = settings.remote.model_copy(update={"api_url": api_url})
        settings = settings.model_copy(update={"remote": remote})
    if device:
        models = settings.models.model_copy(update={"device": device})
        settings = settings.model_copy(update={"models": models})
    return settings


def settings_yaml(settings: Settings, header: str = "") -> str:
    """``settings`` as a YAML config that :func:`load_settings` reads back to an equal value.

    Every field is written, defaults included, so the file keeps its meaning under a later
    version whose defaults differ. ``header`` becomes ``#`` comment lines at the top.
    """
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comments + yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)


def shipped_config(name: str) -> Path:
    """One of :data:`SHIPPED_CONFIGS`, from a checkout or from an installed wheel alike.

    Read through the package rather than a path relative to the source tree, so ``prelabel
    demo`` works wherever prelabel is installed (a venv, a container image), not only from a
    checkout. Installed packages are directories, so the resource is a plain file.
    """
    if name not in SHIPPED_CONFIGS:
        raise ValueError(f"{name} is not shipped with prelabel: one of {SHIPPED_CONFIGS}")
    path = Path(str(resources.files("prelabel").joinpath("configs", name)))
    if not path.is_file():
        raise ConfigError(f"{path} not found: this prelabel installation lacks its package data")
    return path
