"""Jobs: what operators and the automation launch."""
from __future__ import annotations

import dagster as dg

from orchestration.partitions import monthly_partitions
from pipeline.gpu_node import GPU_RUN_TAGS
from pipeline.profiles import PROFILES

frames_job = dg.define_asset_job("frames_job", selection=dg.AssetSelection.assets("video_frames"),
                                 description="Exact frames of one operation video (one partition per video).")
buffer_frames_job = dg.define_asset_job("buffer_frames_job", selection=dg.AssetSelection.assets("buffer_frames"),
                                        description="Frames of one buffer clip, 1 every 30 s.")
annotations_job = dg.define_asset_job("annotations_job", selection=dg.AssetSelection.assets("annotations"),
                                      description="Import CVAT exports (with the agreement check).")
stage_a_job = dg.define_asset_job(
    "stage_a_job", selection=dg.AssetSelection.assets("video_manifest", "stage_a_sample", "annotations",
                                                      "stage_a_baseline"),
    description="The plan's first wave: the Stage A sample, its labels, the off-the-shelf measurement and the gate "
                "(no split needed; the Stage B frames are labelled only if the gate asks).")
launch_job = dg.define_asset_job(
    "launch_job", selection=dg.AssetSelection.assets("v0_shadow_report", "v0_launch"),
    description="v0's launch: its shadow report beside the off-the-shelf model (from the device's logs) and the "
                "promotion gate; v0 reaches production only when it passes.")
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("video_manifest", "plant_photo_frames", "stage_a_sample", "annotations",
                                       "dataset_split", "yolo_dataset", "stage_a_baseline", "stage_b_model",
                                       "selected_model", "evaluation", "onnx_model", "tensorrt_engine"),
    description="From the manifest to the engine: Stage A, the gate, Stage B when needed, export.",
    tags=GPU_RUN_TAGS)  # with the K8sRunLauncher this run's pod lands on the GPU node (pipeline/gpu_node.py)
STAGE_C_CYCLE = ("hard_example_labels", "candidate_model", "candidate_comparison", "shadow_report", "production_model")
monthly_retraining_job = dg.define_asset_job(
    "monthly_retraining_job", selection=dg.AssetSelection.assets("hard_examples", *STAGE_C_CYCLE),
    partitions_def=monthly_partitions, tags=GPU_RUN_TAGS,
    description="The monthly cycle for the previous month: hard examples out to CVAT; the rest waits for their labels "
                "(hard_example_labels says so) and runs when the month resumes (docs/retraining.md).")
retraining_resume_job = dg.define_asset_job(
    "retraining_resume_job", selection=dg.AssetSelection.assets(*STAGE_C_CYCLE), tags=GPU_RUN_TAGS,
    description="A month's cycle from its imported labels: candidate, comparison, shadow, promotion gate.")
rollback_production_job = dg.define_asset_job(
    "rollback_production_job", selection=dg.AssetSelection.assets("production_pointer"),
    config={"ops": {"production_pointer": {"config": {"action": "rollback", "reason": "operator rollback"}}}},
    description="One operator action: make the previous production version current again (history kept).")
production_freshness_job = dg.define_asset_job(
    "production_freshness_job", selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("production_pointer"), "production_model_fresh")),
    description="Flags a production model older than 35 days.")
profiles_job = dg.define_asset_job("profiles_job",
                                   selection=dg.AssetSelection.assets(*(f"profile_{name}" for name in PROFILES)),
                                   tags=GPU_RUN_TAGS,
                                   description="Every training profile, one step each: a failing profile does "
                                               "not stop the others.")
preview_job = dg.define_asset_job("preview_job", selection=dg.AssetSelection.assets("video_preview"),
                                  description="An annotated MP4 of a chosen model on a chosen video (previews/).")
