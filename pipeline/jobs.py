"""Jobs: what operators and the automation launch."""
from __future__ import annotations

import dagster as dg

from assets.partitions import monthly_partitions

frames_job = dg.define_asset_job("frames_job", selection=dg.AssetSelection.assets("video_frames"),
                                 description="Exact frames of one operation video (one partition per video).")
buffer_frames_job = dg.define_asset_job("buffer_frames_job", selection=dg.AssetSelection.assets("buffer_frames"),
                                        description="Frames of one buffer clip, 1 every 30 s.")
annotations_job = dg.define_asset_job("annotations_job", selection=dg.AssetSelection.assets("annotations"),
                                      description="Import CVAT exports (with the agreement check).")
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("video_manifest", "plant_photo_frames", "stage_a_sample", "annotations",
                                       "dataset_split", "yolo_dataset", "stage_a_baseline", "stage_b_model",
                                       "selected_model", "evaluation", "onnx_model", "tensorrt_engine"),
    description="From the manifest to the engine: Stage A, the gate, Stage B when needed, export.")
monthly_retraining_job = dg.define_asset_job(
    "monthly_retraining_job", selection=dg.AssetSelection.assets("hard_examples"), partitions_def=monthly_partitions,
    description="The monthly cycle for the previous month: hard examples out to CVAT.")
