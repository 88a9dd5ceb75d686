"""Storage key layout: the one place that knows how keys are spelled.

Keys are POSIX paths relative to the store root (see docs/ARCHITECTURE.md "Storage"). Nothing else
spells a key: assets, the registry and the demo ask here (tests/test_layers.py refuses a key literal
under assets/).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.versioning import BASE_VERSION, dataset_name, model_name

# --------------------------------------------------------------------------- sources (never modified)

VIDEOS_PREFIX = "raw/videos/"
VIDEO_MANIFEST = "raw/videos/manifest.csv"
PHOTOS_PREFIX = "raw/photos/"
BUFFER_PREFIX = "buffer/"
QUALITY_PREFIX = "buffer/quality/"
INCOMING_ANNOTATIONS = "annotations/incoming/"


def quality_log_key(day: str) -> str:
    """The production detector's quality flags of one day (`YYYY-MM-DD`)."""
    return f"{QUALITY_PREFIX}{day}.parquet"


def buffer_clip_parts(key: str) -> tuple[str, str, str] | None:
    """(camera, day, clip_name) for `buffer/<camera>/<YYYY-MM-DD>/<HHMMSS>.mp4`, else None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "buffer" or parts[1] == "quality" or not parts[3].endswith(".mp4"):
        return None
    day = parts[2]
    if len(day) != 10 or day[4] != "-" or day[7] != "-":
        return None
    return parts[1], day, parts[3]


# --------------------------------------------------------------------------- frames

FRAMES_PREFIX = "frames/"
BUFFER_FRAMES_PREFIX = "frames/buffer/"
HARD_FRAMES_PREFIX = "frames/hard/"
MANIFEST_FILE = "manifest.parquet"


def frames_prefix(source: str, video_id: str) -> str:
    """Folder of one video's extracted frames (source: ops, stage_a, photos)."""
    return f"{FRAMES_PREFIX}{source}/{video_id}/"


def frame_key(source: str, video_id: str, target_s: float) -> str:
    """Key of one extracted frame: named by its target time in ms, so names are stable and sortable."""
    return f"{frames_prefix(source, video_id)}{round(target_s * 1000):09d}.jpg"


def frames_manifest_key(source: str, video_id: str) -> str:
    return f"{frames_prefix(source, video_id)}{MANIFEST_FILE}"


def source_manifest_key(source: str) -> str:
    """One manifest for a whole source (stage_a, photos)."""
    return f"{FRAMES_PREFIX}{source}/{MANIFEST_FILE}"


STAGE_A_MANIFEST = source_manifest_key("stage_a")
STAGE_A_WINDOWS = f"{FRAMES_PREFIX}stage_a/windows.parquet"
PHOTOS_MANIFEST = source_manifest_key("photos")


def buffer_frames_prefix(camera: str, day: str, clip: str) -> str:
    """Frames of one buffer clip (`clip`: its name without .mp4)."""
    return f"{BUFFER_FRAMES_PREFIX}{camera}/{day}/{clip}/"


def hard_frames_prefix(month: str, camera: str, day: str, clip: str) -> str:
    return f"{HARD_FRAMES_PREFIX}{month}/{camera}/{day}/{clip}/"


def hard_frames_manifest_key(month: str) -> str:
    return f"{HARD_FRAMES_PREFIX}{month}/{MANIFEST_FILE}"


def package_file_name(key: str) -> str:
    """Flat, CVAT-safe image name for a frame key: `frames/ops/v1/000002000.jpg` -> `ops__v1__000002000.jpg`."""
    parts = key.split("/")
    if parts and parts[0] == "frames":
        parts = parts[1:]
    return "__".join(parts)


# --------------------------------------------------------------------------- annotations

ANNOTATIONS = "annotations/normalized/annotations.parquet"
ANNOTATION_IMAGES = "annotations/normalized/images.parquet"
ANNOTATION_CLASSES = "annotations/normalized/classes.json"  # the output class list the labels were mapped to
STAGE_A_PACKAGE = "annotations/packages/stage_a.zip"

# --------------------------------------------------------------------------- datasets, per version


@dataclass(frozen=True)
class DatasetKeys:
    """`datasets/lbzf_person_<version>/`: the split file, its assignment and settings, the YOLO dataset."""

    version: str

    @property
    def folder(self) -> str:
        return f"datasets/{dataset_name(self.version)}/"

    @property
    def split(self) -> str:
        return f"{self.folder}dataset_split_{self.version}.csv"

    @property
    def split_assignment(self) -> str:
        return f"{self.folder}split_assignment.parquet"

    @property
    def split_config(self) -> str:
        return f"{self.folder}split_config.json"

    @property
    def yaml(self) -> str:
        return f"{self.folder}{dataset_name(self.version)}.yaml"

    @property
    def labels(self) -> str:
        return f"{self.folder}labels.parquet"

    @property
    def split_record(self) -> str:
        """Every revision of the split, with why it was re-made (pipeline/split_revisions.py)."""
        return f"{self.folder}split_record.json"

    @property
    def split_lock(self) -> str:
        """Written before a model trains from the split: from then on the split is frozen."""
        return f"{self.folder}split_lock.json"

    def split_revision(self, revision: int, sha256: str) -> str:
        return f"{self.folder}split_revisions/{revision:03d}_{sha256[:12]}.csv"


def dataset_keys(version: str) -> DatasetKeys:
    dataset_name(version)  # validates the version
    return DatasetKeys(version)


def split_key(version: str) -> str:
    return dataset_keys(version).split


BASE_SPLIT = split_key(BASE_VERSION)  # dataset_split_v0.csv: the frozen split every version builds on


# --------------------------------------------------------------------------- models, per name and version

SELECTED_MODEL = "models/selected_model.json"


@dataclass(frozen=True)
class ModelKeys:
    """`models/<name>/`: every file of one model, named after it. `version` names the per-version reports."""

    name: str
    version: str | None = None

    @property
    def folder(self) -> str:
        return f"models/{self.name}/"

    def _file(self, suffix: str) -> str:
        return f"{self.folder}{self.name}{suffix}"

    @property
    def weights(self) -> str:
        return self._file(".pt")

    @property
    def onnx(self) -> str:
        return self._file(".onnx")

    @property
    def onnx_meta(self) -> str:
        return self._file(".onnx.json")

    @property
    def engine(self) -> str:
        return self._file(".engine")

    @property
    def engine_sidecar(self) -> str:
        return self._file(".engine.json")

    @property
    def engine_status(self) -> str:
        """The outcome of the latest engine build (built / unavailable / failed), whatever it was."""
        return self._file(".engine.status.json")

    @property
    def engine_deployments(self) -> str:
        return self._file(".engine.deployments.json")

    @property
    def calibration_manifest(self) -> str:
        return f"{self.folder}calibration/calibration_set.json"

    @property
    def calibration_package(self) -> str:
        return f"{self.folder}calibration/calibration_set.zip"

    @property
    def calibration_cache(self) -> str:
        return f"{self.folder}calibration/calib.cache"

    @property
    def train_curves(self) -> str:
        return f"{self.folder}train_curves.parquet"

    @property
    def model_card(self) -> str:
        return f"{self.folder}model_card.json"

    @property
    def train_run(self) -> str:
        """The finished Ultralytics run folder (results.csv, args.yaml, plots, weights): `train_run_<version>/`."""
        return f"{self.folder}train_run_{self.version or self.name}/"

    def figure(self, name: str, ext: str = "png") -> str:
        """A figure (or the JSON behind it) shown in the UI: `models/<name>/figures/<figure>.<ext>`."""
        return f"{self.folder}figures/{name}.{ext}"

    def report(self, kind: str) -> str:
        """`<kind>_<version>.json`: eval, comparison, shadow_report, promotion."""
        if not self.version:
            raise ValueError(f"{self.name}: per-version reports need the model's version")
        return f"{self.folder}{kind}_{self.version}.json"


def model_keys(name: str) -> ModelKeys:
    """The files of a model by name (e.g. yolov8n_offshelf, which has no version)."""
    return ModelKeys(name)


def version_keys(version: str) -> ModelKeys:
    """The files of model `version` (v0, v0.1, ...): `models/yolov8n_lbzf_<version>/`."""
    return ModelKeys(model_name(version), version)


def weights_key(version: str) -> str:
    return version_keys(version).weights


def engine_key(version: str) -> str:
    return version_keys(version).engine


def untrained_weights_key(architecture: str) -> str:
    """The seeded untrained stand-in for an off-the-shelf model that cannot be downloaded here."""
    return f"models/base/{architecture.rsplit('/', 1)[-1].rsplit('.', 1)[0]}_untrained_seed0.pt"


def profile_weights_key(profile: str) -> str:
    return f"models/profiles/{profile}/{profile}.pt"


def profile_figure_key(profile: str, name: str) -> str:
    return f"models/profiles/{profile}/{name}.png"


PREVIEWS_PREFIX = "previews/"


def preview_prefix(video_id: str, model_label: str) -> str:
    """An annotated preview of one model on one video: MP4, contact sheet, detections, summary."""
    return f"{PREVIEWS_PREFIX}{video_id}/{model_label}/"


# --------------------------------------------------------------------------- reports

STAGE_A_REPORTS = "reports/stage_a/"
STAGE_A_REPORT = f"{STAGE_A_REPORTS}stage_a_report.json"
STAGE_A_PER_FRAME = f"{STAGE_A_REPORTS}per_frame.parquet"
STAGE_A_PREDICTIONS = f"{STAGE_A_REPORTS}predictions.parquet"
FLIP_ABLATION_REPORT = "reports/experiments/flip_ablation.json"

# --------------------------------------------------------------------------- the registry

PRODUCTION_POINTER = "registry/production.json"
VERSIONS_PREFIX = "registry/versions/"
PRODUCED_WEIGHTS_PREFIX = "registry/weights/"


def version_reservation_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}{version}.json"


def produced_weights_key(sha256: str) -> str:
    return f"{PRODUCED_WEIGHTS_PREFIX}{sha256}.json"


# --------------------------------------------------------------------------- the monthly cycle (Stage C)

RETRAINING_PREFIX = "retraining/"
HARD_LABELS_FILE = "hard_example_labels.parquet"


@dataclass(frozen=True)
class MonthKeys:
    """`retraining/<YYYY-MM>/`: one month's hard-example sample, its CVAT task and its labels."""

    month: str

    @property
    def folder(self) -> str:
        return f"{RETRAINING_PREFIX}{self.month}/"

    @property
    def hard_examples(self) -> str:
        return f"{self.folder}hard_examples.parquet"

    @property
    def sample(self) -> str:
        return f"{self.folder}sample.json"

    @property
    def task_package(self) -> str:
        return f"{self.folder}cvat_task_package.zip"

    @property
    def hard_labels(self) -> str:
        return f"{self.folder}{HARD_LABELS_FILE}"

    @property
    def candidate_pointer(self) -> str:
        return f"{self.folder}candidate.json"


def month_keys(month: str) -> MonthKeys:
    return MonthKeys(month)


def hard_labels_month(key: str) -> str | None:
    """The month of a `retraining/<YYYY-MM>/hard_example_labels.parquet` key, else None."""
    parts = key.split("/")
    if len(parts) == 3 and key.startswith(RETRAINING_PREFIX) and parts[2] == HARD_LABELS_FILE:
        return parts[1]
    return None


def shadow_logs_prefix(version: str) -> str:
    """Where the Jetson uploads the shadow run's logs of candidate `version`."""
    return f"shadow/{version}/logs/"

TRAIN_RUNS_PREFIX = "train_runs/"


def train_run_prefix(name: str) -> str:
    """Where a training run's folder is kept while it trains (`pipeline.train_runs`): `train_runs/<run>/`."""
    return f"{TRAIN_RUNS_PREFIX}{name}/"
