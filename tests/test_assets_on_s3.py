"""The same asset code on S3: footage and label assets materialized against a loopback S3 server."""
import io
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.footage import plant_photo_frames, stage_a_sample, video_frames, video_manifest
from assets.labels import annotations
from demo.generate import SMALL, generate_demo
from resources.storage import S3ArtifactStore

pytestmark = pytest.mark.integration
TINY = replace(SMALL, videos_per_category=1, post_install_videos=1, duration_s=12.0, active_s=6.0,
               stage_a_window_s=10.0, overlap_frames=5, buffer_days=("2026-07-01",), buffer_cameras=("cam1",),
               buffer_clip_starts=("080000",), buffer_clip_s=30.0)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    generate_demo(root, TINY)
    return root


def _seed(root: Path, store: S3ArtifactStore) -> dict[str, str]:
    seeder = store.model_copy(update={"allow_source_writes": True})
    etags = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = path.relative_to(root).as_posix()
            etags[key] = seeder.upload_file(path, key).etag
    return etags


def test_footage_and_annotation_assets_run_on_s3(tiny_store, s3_store):
    sources = _seed(tiny_store, s3_store)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"store": s3_store}
    config = {"ops": {"stage_a_sample": {"config": {"window_s": TINY.stage_a_window_s}}}}

    result = dg.materialize([video_manifest, plant_photo_frames, stage_a_sample], resources=resources,
                            instance=instance, run_config=config)
    assert result.success
    videos = sorted(instance.get_dynamic_partitions("videos"))
    assert len(videos) == 8  # 7 operations x 1 + 1 post-install
    for video in videos:
        assert dg.materialize([video_frames], partition_key=video, resources=resources, instance=instance).success
    result = dg.materialize([annotations], resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("annotations")[0].metadata
    assert meta["exports"].value == 3 and meta["boxes"].value > 0

    # frames went to S3 with their manifests; the sources were not touched
    manifest = pd.read_parquet(io.BytesIO(s3_store.read_bytes(f"frames/ops/{videos[0]}/manifest.parquet")))
    assert len(manifest) == 6 and all(s3_store.exists(k) for k in manifest["frame_key"])
    stage_a = pd.read_parquet(io.BytesIO(s3_store.read_bytes("frames/stage_a/manifest.parquet")))
    assert len(stage_a) == 7 * 2  # 1 video per operation, 1 frame / 5 s in a 10 s window
    assert s3_store.exists("annotations/packages/stage_a.zip")
    assert {k: s3_store.stat(k).etag for k in sources} == sources
    assert s3_store.uri("frames/x.jpg").startswith("s3://")
