"""Near-duplicate audit across splits: the perceptual hash on real rendered frames, the multi-index search
against brute force, and the non-blocking `near_duplicates_across_splits` check through Dagster."""
from __future__ import annotations

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.labels import dataset_split, near_duplicates_across_splits
from demo.scene import View, clamp_view, load_photos, render
from pipeline import keys
from pipeline.errors import PipelineInputError
from pipeline.near_duplicates import PAIR_COLUMNS, cross_split_pairs, hamming, near_pairs, phash, phash_bytes
from pipeline.split import split_csv
from resources.storage import LocalArtifactStore

W, H = 480, 272


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def scene(index: int, cx: float = 0.5, cy: float = 0.5, zoom: float = 0.8) -> np.ndarray:
    """A frame of the demo's virtual camera over one of the hand-labelled photographs."""
    photo = load_photos()[index]
    return render(photo, clamp_view(photo, View(photo.width * cx, photo.height * cy, photo.width * zoom), W, H), W, H)


def degraded(image: np.ndarray, seed: int = 0) -> bytes:
    """The same frame after sensor noise, a slight exposure change and JPEG re-encoding at quality 60."""
    noisy = image.astype(np.float32) * 1.05 + np.random.default_rng(seed).normal(0, 6, image.shape)
    return jpeg(np.clip(noisy, 0, 255).astype(np.uint8), 60)


@pytest.fixture(scope="module")
def frames() -> dict[str, bytes]:
    bus = scene(0)
    return {
        "frames/ops/v_bus/000000000.jpg": jpeg(bus),
        "frames/ops/v_bus_again/000000000.jpg": degraded(bus),                      # the near-duplicate
        "frames/ops/v_bus_small/000000000.jpg": jpeg(cv2.resize(bus, (320, 181)), 75),  # rescaled copy
        "frames/ops/v_bus_zoom/000000000.jpg": jpeg(scene(0, 0.35, 0.45, 0.45)),    # same photo, other view
        "frames/ops/v_grace/000000000.jpg": jpeg(scene(1)),
        "frames/ops/v_zidane/000000000.jpg": jpeg(scene(2)),
    }


def hashes_of(frames: dict[str, bytes]) -> dict[str, np.uint64]:
    return {k: phash_bytes(v, k) for k, v in frames.items()}


def test_noised_reencoded_copy_is_near_and_other_frames_are_far(frames):
    h = hashes_of(frames)
    near = {k: int(hamming(h["frames/ops/v_bus/000000000.jpg"], h[k])) for k in h}
    assert near["frames/ops/v_bus_again/000000000.jpg"] <= 6
    assert near["frames/ops/v_bus_small/000000000.jpg"] <= 6
    others = [k for k in h if "v_bus/" not in k and "again" not in k and "small" not in k]
    assert min(near[k] for k in others) > 12, near          # unrelated scenes: far beyond the threshold
    # the hash of decoded pixels equals the hash of the encoded bytes at full scale (reduced decoding is a speed-up)
    decoded = cv2.imdecode(np.frombuffer(frames["frames/ops/v_grace/000000000.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert hamming(phash(decoded), h["frames/ops/v_grace/000000000.jpg"]) <= 2


def test_pairs_are_found_across_splits_only(frames):
    h = hashes_of(frames)
    names = list(frames)
    splits = {"frames/ops/v_bus/000000000.jpg": "val", "frames/ops/v_bus_again/000000000.jpg": "train",
              "frames/ops/v_bus_small/000000000.jpg": "val", "frames/ops/v_bus_zoom/000000000.jpg": "test",
              "frames/ops/v_grace/000000000.jpg": "test", "frames/ops/v_zidane/000000000.jpg": "train"}
    pairs = cross_split_pairs(names, [splits[n] for n in names], np.array([h[n] for n in names]), 6,
                              split_order=("train", "val", "test"))
    assert list(pairs.columns) == PAIR_COLUMNS
    # bus (val) ~ bus_again (train), bus_small (val) ~ bus_again (train); bus ~ bus_small share a split: not listed
    got = {(r.frame_a, r.split_a, r.frame_b, r.split_b) for r in pairs.itertuples()}
    assert got == {("frames/ops/v_bus_again/000000000.jpg", "train", "frames/ops/v_bus/000000000.jpg", "val"),
                   ("frames/ops/v_bus_again/000000000.jpg", "train", "frames/ops/v_bus_small/000000000.jpg", "val")}
    assert (pairs["distance"] <= 6).all() and pairs["distance"].is_monotonic_increasing
    same = cross_split_pairs(names, ["train"] * len(names), np.array([h[n] for n in names]), 6)
    assert same.empty


def _random_hashes(rng: np.random.Generator, n: int, planted: int) -> np.ndarray:
    base = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    flips = np.zeros(planted, np.uint64)
    for i in range(planted):  # copies of the first hashes with 0..10 bits flipped
        for bit in rng.choice(64, int(rng.integers(0, 11)), replace=False):
            flips[i] |= np.uint64(1) << np.uint64(int(bit))
    return np.concatenate([base, base[:planted] ^ flips, base[:5]])  # and 5 exact repeats


@pytest.mark.parametrize("max_distance", [0, 3, 6, 9])
def test_multi_index_search_finds_exactly_the_brute_force_pairs(max_distance):
    h = _random_hashes(np.random.default_rng(max_distance), 1500, 300)
    got = near_pairs(h, max_distance)
    d = hamming(h[:, None], h[None, :])
    a, b = np.nonzero(np.triu(d <= max_distance, 1))
    assert set(zip(got["a"].tolist(), got["b"].tolist())) == set(zip(a.tolist(), b.tolist()))
    assert (got["distance"].to_numpy() == d[got["a"], got["b"]]).all()
    assert len(got) >= 5  # the planted repeats at least: the comparison is not between two empty sets


def test_identical_frames_expand_to_every_cross_split_pair():
    h = np.array([7, 7, 7, 7, 7, ~np.uint64(7)], dtype=np.uint64)  # the last one is 64 bits away
    keys = [f"f{i}" for i in range(6)]
    splits = ["train", "train", "train", "val", "val", "test"]
    pairs = cross_split_pairs(keys, splits, h, 6, split_order=("train", "val", "test"))
    assert len(pairs) == 3 * 2 and set(pairs["split_a"]) == {"train"} and set(pairs["split_b"]) == {"val"}
    assert set(pairs["distance"]) == {0}


def test_bad_threshold_and_lengths_are_refused():
    with pytest.raises(PipelineInputError, match="bad Hamming distance threshold"):
        near_pairs(np.zeros(3, np.uint64), 40)
    with pytest.raises(PipelineInputError, match="length mismatch"):
        cross_split_pairs(["a", "b"], ["train", "val"], np.zeros(3, np.uint64))
    with pytest.raises(PipelineInputError, match="not a decodable image"):
        phash_bytes(b"not an image", "frames/x.jpg")


def _store_with_split(root, frames: dict[str, bytes], splits: dict[str, str]) -> LocalArtifactStore:
    store = LocalArtifactStore(root=str(root))
    for key, data in frames.items():
        store.write_bytes(key, data)
    table = pd.DataFrame({"frame_key": list(splits), "video_id": [k.split("/")[2] for k in splits],
                          "operation": "Collar", "camera": "cam1", "recorded_day": "2026-04-10",
                          "group": [f"g:{k.split('/')[2]}" for k in splits], "split": list(splits.values())})
    store.write_bytes(keys.BASE_SPLIT, split_csv(table)[0])
    return store


def _run_check(store, **config) -> dg.AssetCheckEvaluation:
    result = dg.materialize([dataset_split, near_duplicates_across_splits], resources={"store": store},
                            selection=dg.AssetSelection.checks(near_duplicates_across_splits),
                            run_config={"ops": {"dataset_split_near_duplicates_across_splits": {"config": config}}}
                            if config else None, instance=dg.DagsterInstance.ephemeral())
    assert result.success  # non-blocking: a warning, never a failed run
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_check_warns_with_a_table_of_pairs_and_passes_without(tmp_path, frames):
    splits = {k: s for k, s in zip(frames, ["train", "val", "val", "test", "test", "train"])}
    evaluation = _run_check(_store_with_split(tmp_path / "a", frames, splits))
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert meta["near_duplicate_pairs"] == 2 and meta["frames_hashed"] == 6 and meta["max_distance"] == 6
    assert "frames/ops/v_bus_again/000000000.jpg" in meta["pairs"] and "distance |" in meta["pairs"]
    assert "v_bus_small" in meta["pairs"] and "v_zidane" not in meta["pairs"]

    strict = _run_check(_store_with_split(tmp_path / "b", frames, splits), max_distance=3)
    assert strict.metadata["near_duplicate_pairs"].value == 1  # the threshold is applied: the rescaled copy is 4 away
    assert "v_bus_again" in strict.metadata["pairs"].value and "v_bus_small" not in strict.metadata["pairs"].value

    apart = {k: ("train" if "bus" in k else "val") for k in frames}  # all bus frames in one split
    clean = _run_check(_store_with_split(tmp_path / "c", frames, apart))
    assert clean.passed and clean.metadata["near_duplicate_pairs"].value == 0
