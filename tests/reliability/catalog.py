"""The catalog of fault classes the reliability suite injects.

Each class names its stage, how the fault is injected and the outcome the pipeline must show:

* ``rejected``    - refused with a clear error naming the file/key, the field, the value and a remedy;
* ``quarantined`` - refused with such an error *and* a quarantine record written for the source key;
* ``survived``    - the fault is absorbed (retries, waiting for a stable upload, idempotent re-ticks) and
                    the end result is the same as without it;
* ``flagged``     - accepted but reported (an audit/check names the problem: nothing silently passes);
* ``ignored``     - not pipeline input at all (e.g. a key outside the layout): no run, no crash.

Tests claim a class with ``@pytest.mark.fault("<id>")``; ``conftest.py`` records what each test observed
and ``scripts/reliability_report.py`` turns that into ``docs/reliability.md``. No pytest import here, so
the report script can read the catalog on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("rejected", "quarantined", "survived", "flagged", "ignored")


@dataclass(frozen=True)
class Fault:
    id: str
    stage: str
    name: str
    injection: str
    expected: str


_F = [
    # ------------------------------------------------------------------ footage
    ("footage.empty", "footage", "empty upload", "0-byte raw/videos/<id>.mp4", "quarantined"),
    ("footage.not_a_video", "footage", "not a video", "random bytes stored as .mp4", "quarantined"),
    ("footage.text_as_mp4", "footage", "text file renamed .mp4", "a CSV saved under raw/videos/*.mp4", "quarantined"),
    ("footage.audio_only", "footage", "audio only", "AAC-only .mp4 (no video stream)", "quarantined"),
    ("footage.moov_missing", "footage", "truncated, moov missing", "first half of a moov-at-end MP4", "quarantined"),
    ("footage.cut_midstream", "footage", "data cut mid-stream", "first half of a faststart MP4 (index intact)",
     "quarantined"),
    ("footage.unsupported_codec", "footage", "unsupported codec", "sample entry 'avc1' patched to 'zzzz'",
     "quarantined"),
    ("footage.target_past_end", "footage", "target beyond the decodable end", "extract at t > duration",
     "rejected"),
    ("footage.still_uploading", "footage", "clip still uploading", "buffer clip grows between sensor ticks",
     "survived"),
    ("footage.duplicate_upload", "footage", "duplicate upload under another name",
     "same bytes under two video ids, landing in different splits", "rejected"),
    ("footage.bad_buffer_clip_in_month", "footage", "undecodable buffer clip among the month's clips",
     "garbage after an ftyp header at buffer/cam2/<day>/080000.mp4, flagged red", "quarantined"),
    ("footage.bad_video_in_stage_a_sample", "footage", "undecodable video drawn for the Stage A sample",
     "a moov-at-end MP4 cut in half, listed in the manifest", "quarantined"),
    ("footage.key_without_camera_day", "footage", "buffer key without camera/day",
     "buffer/<clip>.mp4, buffer/<cam>/<not-a-day>/..., buffer/<cam>/<day>/<sub>/...", "ignored"),
    ("footage.fixed_rerun_identical", "footage", "bad file replaced by a good one",
     "quarantined video replaced, extraction run twice", "survived"),
    # ------------------------------------------------------------------ annotations
    ("annotations.malformed_json", "annotations", "malformed JSON", "COCO JSON cut mid-document", "rejected"),
    ("annotations.not_utf8", "annotations", "JSON not UTF-8", "latin-1 bytes in a COCO JSON", "rejected"),
    ("annotations.json_not_object", "annotations", "JSON is not an object", "a JSON list", "rejected"),
    ("annotations.missing_key", "annotations", "missing required key", "COCO without 'annotations'", "rejected"),
    ("annotations.malformed_xml", "annotations", "malformed XML", "CVAT XML cut mid-element", "rejected"),
    ("annotations.xml_doctype", "annotations", "XML entity declaration (XXE)", "<!DOCTYPE> with <!ENTITY>",
     "rejected"),
    ("annotations.dangling_image_id", "annotations", "dangling image id", "annotation.image_id not in images",
     "rejected"),
    ("annotations.dangling_category_id", "annotations", "dangling category id", "category_id not in categories",
     "rejected"),
    ("annotations.duplicate_image_id", "annotations", "duplicate image id", "two images share an id", "rejected"),
    ("annotations.duplicate_annotation_id", "annotations", "duplicate annotation id", "two boxes share an id",
     "rejected"),
    ("annotations.duplicate_category_id", "annotations", "duplicate category id", "two categories share an id",
     "rejected"),
    ("annotations.box_outside", "annotations", "box outside the image", "bbox x beyond width + 2 px", "rejected"),
    ("annotations.negative_size", "annotations", "negative box size", "bbox width -5", "rejected"),
    ("annotations.zero_size", "annotations", "zero box size", "bbox height 0", "rejected"),
    ("annotations.nan_size", "annotations", "NaN box size", "bbox width NaN", "rejected"),
    ("annotations.malformed_bbox", "annotations", "malformed bbox", "bbox with 3 numbers", "rejected"),
    ("annotations.bad_image_size", "annotations", "image size not positive", "images[].height 0", "rejected"),
    ("annotations.unmapped_label", "annotations", "unmapped label", "a label the mapping does not know", "rejected"),
    ("annotations.unknown_format", "annotations", "unknown format", "plain text / Datumaro JSON", "rejected"),
    ("annotations.archive_traversal", "annotations", "archive path traversal", "member '../../escaped.txt'",
     "rejected"),
    ("annotations.archive_absolute", "annotations", "archive absolute path", "member '/tmp/escaped.txt'",
     "rejected"),
    ("annotations.archive_symlink", "annotations", "archive symlink member", "member with S_IFLNK mode",
     "rejected"),
    ("annotations.archive_zip_bomb", "annotations", "zip bomb", "8 MiB of zeros compressed ~1000:1", "rejected"),
    ("annotations.archive_encrypted", "annotations", "encrypted member", "general-purpose flag bit 0 set",
     "rejected"),
    ("annotations.archive_too_many_members", "annotations", "too many members", "more members than the limit",
     "rejected"),
    ("annotations.archive_corrupt", "annotations", "corrupt zip", "zip with its central directory damaged",
     "rejected"),
    # ------------------------------------------------------------------ split and gate
    ("split.too_few_groups", "split", "too few groups", "one camera-day for train/val/test", "rejected"),
    ("split.empty_test_set", "split", "empty test set", "three groups for 70/15/15: test gets none", "rejected"),
    ("split.missing_columns", "split", "manifest missing columns", "no recorded_day column", "rejected"),
    ("split.mixed_post_install", "split", "pre/post-install in one group", "same camera-day, both kinds",
     "rejected"),
    ("split.frames_without_split", "split", "frames of an unknown video", "frame rows whose video is not in the "
     "manifest", "rejected"),
    ("split.duplicate_video_id", "split", "duplicate video id", "assignment with a repeated video_id", "rejected"),
    ("split.leak_detected", "split", "leaky split", "one video's frames in train and test", "flagged"),
    ("gate.no_persons_labelled", "gate", "no persons labelled", "frames with no person boxes -> NaN metrics",
     "flagged"),
    ("gate.ci_straddles", "gate", "CI straddles the threshold", "recall CI [0.93, 0.97] vs 0.95", "flagged"),
    # ------------------------------------------------------------------ training and export
    ("model.corrupt_weights", "model", "corrupt weights", "random bytes as base weights .pt", "rejected"),
    ("model.unknown_weights", "model", "unknown weights (pickle payload)", "a pickle whose load writes a file",
     "rejected"),
    ("model.weights_missing_prod", "model", "weights missing, no fallback", "LBZF_BASE_WEIGHTS to nothing, prod",
     "rejected"),
    ("model.training_interrupted", "model", "training interrupted",
     "SIGKILL of the Pipes training worker after epoch 1 (real tiny Ultralytics run), then re-run", "survived"),
    ("model.int8_without_calibration", "model", "INT8 without calibration", "precision int8, no cache", "rejected"),
    ("model.int8_calibration_missing", "model", "INT8 calibration cache missing", "cache path does not exist",
     "rejected"),
    ("model.onnx_shape_mismatch", "model", "ONNX input shape mismatch", "1x3x320x320 model, imgsz 640", "rejected"),
    ("model.onnx_class_mismatch", "model", "ONNX class count mismatch", "output [1,84,N] for 1 class", "rejected"),
    ("model.engine_trt_mismatch", "model", "engine TensorRT version mismatch", "built 8.5.2, device 8.6.1",
     "rejected"),
    ("model.produced_weights_swapped", "model", "pipeline weights swapped in the store",
     "models/.../yolov8n_lbzf_v0.pt overwritten out of band with a hostile pickle", "rejected"),
    ("model.checkpoint_tampered", "model", "unrecorded training checkpoint",
     "weights/last.pt without the pipeline's sha256 pin (or with another)", "rejected"),
    ("model.engine_l4t_mismatch", "model", "engine L4T mismatch", "built on L4T 35.3.1, device 35.4.1", "rejected"),
    ("model.engine_version_unknown", "model", "engine version unknown", "sidecar without a TensorRT version",
     "rejected"),
    # ------------------------------------------------------------------ storage
    ("storage.s3_500", "storage", "S3 500 InternalError", "proxy answers 500 to the first 3 PUTs", "survived"),
    ("storage.s3_slowdown", "storage", "S3 503 SlowDown (throttling)", "proxy answers 503 SlowDown to 4 requests",
     "survived"),
    ("storage.get_cut_midbody", "storage", "download cut mid-body", "proxy closes a GET after half the body",
     "survived"),
    ("storage.upload_part_cut", "storage", "connection cut mid-upload", "proxy drops every UploadPart mid-body",
     "rejected"),
    ("storage.kms_access_denied", "storage", "KMS access denied", "proxy answers 403 KMS.AccessDeniedException to "
     "SSE-KMS writes", "rejected"),
    ("storage.concurrent_versioned_writer", "storage", "concurrent writer to a versioned key",
     "another writer puts different bytes first", "rejected"),
    ("storage.local_writer_killed", "storage", "writer process killed mid-write (local)",
     "SIGKILL of a process streaming a model into the local store", "survived"),
    ("storage.s3_writer_killed", "storage", "writer process killed mid-multipart (S3)",
     "SIGKILL of a process after its first UploadPart", "survived"),
    ("storage.local_write_interrupted", "storage", "local write interrupted", "reader raises half way", "rejected"),
    ("storage.s3_error_names_key", "storage", "S3 access denied / KMS disabled on read, write and list",
     "proxy answers 403 AccessDenied and KMS.DisabledException", "rejected"),
    ("storage.source_write", "storage", "write to a source prefix", "pipeline store writes raw/...", "rejected"),
    ("storage.key_traversal", "storage", "key path traversal", "key 'frames/../../etc/passwd'", "rejected"),
    # ------------------------------------------------------------------ orchestration
    ("orchestration.sensor_tick_repeated", "orchestration", "buffer sensor tick repeated",
     "same tick evaluated twice (cursor lost) and again with the new cursor", "survived"),
    ("orchestration.annotation_tick_repeated", "orchestration", "annotation sensor tick repeated",
     "same tick evaluated twice", "survived"),
    ("orchestration.invalid_deployment", "orchestration", "invalid deployment setting",
     "DAGSTER_DEPLOYMENT=staging", "rejected"),
    ("orchestration.missing_setting", "orchestration", "missing prod setting", "prod without LBZF_S3_KMS_KEY_ID",
     "rejected"),
    ("orchestration.kms_key_not_arn", "orchestration", "KMS key not given by ARN",
     "LBZF_S3_KMS_KEY_ID as an alias, a bare key id or an alias ARN", "rejected"),
    ("orchestration.invalid_run_config", "orchestration", "invalid run config", "a wrong-typed field in run config",
     "rejected"),
    # ------------------------------------------------------------------ secrets
    ("secrets.aws_secret_in_errors", "secrets", "AWS secret in storage errors", "canary AWS_SECRET_ACCESS_KEY, "
     "S3 denied/5xx", "rejected"),
    ("secrets.kms_and_event_log", "secrets", "secret in a failing materialization's event log",
     "canary credentials, KMS denied inside an asset", "rejected"),
    ("secrets.deployment_errors", "secrets", "secrets in deployment errors", "canary Postgres password / "
     "Jetson key passphrase, deployment fails", "rejected"),
]

FAULTS: dict[str, Fault] = {f[0]: Fault(*f) for f in _F}
assert len(FAULTS) == len(_F), "duplicate fault id"
assert all(f.expected in OUTCOMES for f in FAULTS.values())

# Classes whose refusal is not (yet) the project's structured error (file/field/value/remedy attributes), and
# why. The fixture fails a class listed here whose error turns out complete (so this list cannot go stale)
# and any other class whose error lacks a part; the report counts and names them.
KNOWN_UNSTRUCTURED = {
    "orchestration.invalid_run_config": "Dagster's own DagsterInvalidConfigError, raised by Dagster (launchpad, CLI, "
                                        "schedules) before pipeline code runs; its message names the config path "
                                        "and the expected type, but it carries no file/field/value attributes",
}
assert set(KNOWN_UNSTRUCTURED) <= set(FAULTS)
