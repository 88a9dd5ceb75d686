"""Near-duplicate frames across splits: a 64-bit perceptual hash per frame and a multi-index search.

A split by video and camera-day keeps one recording out of two splits, but it cannot see the same scene
filmed twice (a camera that did not move between two days, a video uploaded twice under two ids, a plant
photo that is also a video frame). Such pairs inflate validation and test figures. This module finds them:

* ``phash`` is the DCT perceptual hash: the image in grey, shrunk to 32 x 32, its 2-D DCT, the 8 x 8
  lowest frequencies, one bit per coefficient (above their median or not). Noise, JPEG re-encoding, small
  brightness changes and rescaling move few bits; a different scene moves about half of them.
  JPEGs are decoded at 1/8 (or 1/4, 1/2) scale by libjpeg directly (``cv2.IMREAD_REDUCED_GRAYSCALE_*``):
  the hash only needs 32 x 32 pixels, and decoding is most of the cost.
* ``near_pairs`` finds every pair of hashes within a Hamming distance ``max_distance`` without comparing
  all pairs (multi-index hashing): the 64 bits are cut into 4 bands of 16 bits; two hashes within
  distance r agree to within ``r // 4`` bits on at least one band (pigeonhole), so each hash probes, per
  band, the bucket of its own band value and of every value within ``r // 4`` flipped bits (17 probes for
  r = 4..7). Candidates are then checked exactly. Sorting and ``searchsorted`` do the bucket look-ups, so
  the work grows with the number of candidates, not with n^2.
* ``cross_split_pairs`` runs the search on the distinct (hash, split) values only and expands the result
  to frames, keeping pairs whose frames are in different splits.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from typing import Callable, Iterable

import cv2
import numpy as np
import pandas as pd

from pipeline.errors import PipelineInputError

__all__ = ["BANDS", "MAX_DISTANCE", "PAIR_COLUMNS", "cross_split_pairs", "hamming", "hash_frames", "near_pairs",
           "phash", "phash_bytes"]

BANDS = 4                  # 4 bands of 16 bits
_BAND_BITS = 64 // BANDS
MAX_DISTANCE = 15          # r // 4 <= 3: at most 697 probes per band; beyond that nothing is "near" anyway
PAIR_COLUMNS = ["frame_a", "split_a", "frame_b", "split_b", "distance"]
_HASH_SIDE = 32
_LOW = 8


# ------------------------------------------------------------------------------------------------ hashing


def phash(image: np.ndarray) -> np.uint64:
    """64-bit DCT perceptual hash of an image (grey, BGR or BGRA uint8 array)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise PipelineInputError("image", "array", getattr(image, "shape", type(image).__name__),
                                 "pass a decoded image (H x W or H x W x C uint8)", problem="not an image")
    gray = image
    if image.ndim == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:_LOW, :_LOW]
    bits = (low > np.median(low)).ravel()
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


_REDUCED = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
            (2, cv2.IMREAD_REDUCED_GRAYSCALE_2), (1, cv2.IMREAD_GRAYSCALE))


def phash_bytes(data: bytes, name: str = "image") -> np.uint64:
    """``phash`` of an encoded image (JPEG, PNG, ...), decoded at the smallest scale that keeps >= 64 px
    on the short side (at most two decodes: 1/8 first, then the scale its size calls for)."""
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, _REDUCED[0][1])
    if image is None:
        raise PipelineInputError(name, "bytes", f"{len(data)} bytes", "replace it with a readable JPEG/PNG",
                                 problem="not a decodable image")
    short = min(image.shape[:2]) * _REDUCED[0][0]  # about the full-size short side
    if short < _REDUCED[0][0] * 2 * _HASH_SIDE:
        flag = next(f for factor, f in _REDUCED[1:] if factor == 1 or short / factor >= 2 * _HASH_SIDE)
        image = cv2.imdecode(buf, flag)
    return phash(image)


def hash_frames(keys: Iterable[str], read: Callable[[str], bytes], workers: int = 8) -> np.ndarray:
    """Hashes of the images ``read(key)`` returns, in the order of ``keys``; reads and decodes in threads
    (store reads wait on I/O and OpenCV releases the GIL while decoding)."""
    keys = list(keys)

    def one(key: str) -> np.uint64:
        return phash_bytes(read(key), key)

    if not keys:
        return np.zeros(0, np.uint64)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys)))) as pool:
        return np.fromiter(pool.map(one, keys), dtype=np.uint64, count=len(keys))


# ------------------------------------------------------------------------------------------------ search


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two uint64 arrays (element by element)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)  # pragma: no cover


def _masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most `radius` bits set."""
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(_BAND_BITS), k)]
    return np.asarray(masks, dtype=np.int64)


def _check_distance(max_distance: int) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)) or \
            not 0 <= max_distance <= MAX_DISTANCE:
        raise PipelineInputError("near-duplicate search", "max_distance", max_distance,
                                 f"use a whole number of bits from 0 to {MAX_DISTANCE} (6 is a good default)",
                                 problem="bad Hamming distance threshold")
    return int(max_distance)


def near_pairs(hashes: np.ndarray, max_distance: int,
               keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
    """Every pair (a, b), a < b (positions in `hashes`), with Hamming distance <= max_distance.

    `keep(a, b)`, when given, filters candidate pairs early (e.g. "different splits"). Returns columns
    a, b, distance, sorted by a, b.
    """
    r = _check_distance(max_distance)
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    n = h.size
    found: list[np.ndarray] = []
    if n >= 2:
        masks = _masks(r // BANDS)
        positions = np.arange(n, dtype=np.int64)
        for band in range(BANDS):
            vals = ((h >> np.uint64(_BAND_BITS * band)) & np.uint64(0xFFFF)).astype(np.int64)
            order = np.argsort(vals, kind="stable")
            ordered = vals[order]
            for mask in masks:
                probe = vals ^ mask
                lo = np.searchsorted(ordered, probe, "left")
                count = np.searchsorted(ordered, probe, "right") - lo
                total = int(count.sum())
                if total == 0:
                    continue
                a = np.repeat(positions, count)
                offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
                b = order[np.repeat(lo, count) + offset]
                both = a < b  # each unordered pair once per probe (the other order probes back with the same mask)
                a, b = a[both], b[both]
                if keep is not None and a.size:
                    ok = keep(a, b)
                    a, b = a[ok], b[ok]
                close = hamming(h[a], h[b]) <= r
                if close.any():
                    found.append(a[close] * n + b[close])
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    a, b = pairs // max(n, 1), pairs % max(n, 1)
    return pd.DataFrame({"a": a, "b": b, "distance": hamming(h[a], h[b]) if a.size else np.zeros(0, np.int64)})


def cross_split_pairs(frame_keys: Iterable[str], splits: Iterable[str], hashes: np.ndarray,
                      max_distance: int = 6, split_order: tuple[str, ...] = ()) -> pd.DataFrame:
    """Pairs of frames in different splits whose hashes are within `max_distance` bits.

    Columns PAIR_COLUMNS; ``frame_a`` is the frame of the split earlier in `split_order` (then by name),
    rows sorted by distance, then frame names.
    """
    frames = pd.DataFrame({"frame_key": list(frame_keys), "split": list(splits)})
    h = np.asarray(hashes, dtype=np.uint64).ravel()
    if len(frames) != h.size:
        raise PipelineInputError("near-duplicate search", "hashes", h.size,
                                 f"pass one hash per frame ({len(frames)} frames)", problem="length mismatch")
    _check_distance(max_distance)
    if frames.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    frames["hash"] = h
    split_codes, split_names = pd.factorize(frames["split"].astype(str), sort=True)
    frames["split_code"] = split_codes
    # distinct (hash, split) units: identical frames within one split are searched once
    unit_of, units = pd.factorize(pd.MultiIndex.from_arrays([frames["hash"], frames["split_code"]]))
    unit_hash = np.asarray(units.get_level_values(0), dtype=np.uint64)
    unit_split = np.asarray(units.get_level_values(1), dtype=np.int64)
    pairs = near_pairs(unit_hash, max_distance, keep=lambda a, b: unit_split[a] != unit_split[b])
    if pairs.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    # expand unit pairs to frame pairs: frames of unit a x frames of unit b
    by_unit = np.argsort(unit_of, kind="stable")
    size = np.bincount(unit_of, minlength=len(units))
    start = np.cumsum(size) - size
    ua, ub = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    n_pairs = size[ua] * size[ub]
    pair_of = np.repeat(np.arange(len(ua)), n_pairs)
    k = np.arange(int(n_pairs.sum()), dtype=np.int64) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    fa = by_unit[start[ua][pair_of] + k // size[ub][pair_of]]
    fb = by_unit[start[ub][pair_of] + k % size[ub][pair_of]]
    rank = {name: i for i, name in enumerate(split_order)}
    split_rank = np.array([rank.get(name, len(rank)) for name in split_names], dtype=np.int64)
    keys = frames["frame_key"].astype(str).to_numpy()
    codes = frames["split_code"].to_numpy()
    swap = (split_rank[codes[fa]] > split_rank[codes[fb]]) | (
        (split_rank[codes[fa]] == split_rank[codes[fb]]) & (keys[fa] > keys[fb]))
    fa, fb = np.where(swap, fb, fa), np.where(swap, fa, fb)
    out = pd.DataFrame({"frame_a": keys[fa], "split_a": np.asarray(split_names)[codes[fa]], "frame_b": keys[fb],
                        "split_b": np.asarray(split_names)[codes[fb]],
                        "distance": pairs["distance"].to_numpy()[pair_of]})
    return out.sort_values(["distance", "frame_a", "frame_b"], kind="stable").reset_index(drop=True)
