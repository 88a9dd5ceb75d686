"""Export containers: a zip (checked member by member before anything is extracted), an unpacked
directory, or a bare file; each annotation file goes to its format's parser."""
from __future__ import annotations

import re
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.cvat.coco import _parse_coco
from pipeline.cvat.common import _FORMAT_REMEDY, _ALTERED_ARCHIVE, _Parsed
from pipeline.cvat.cvat_xml import _parse_xml
from pipeline.errors import AnnotationError
from pipeline.hashing import sha256_bytes


@dataclass(frozen=True)
class ArchiveLimits:
    """What an export zip may contain before it is refused (checked before anything is extracted)."""

    max_total_bytes: int = 2 * 1024**3       # sum of declared uncompressed sizes
    max_members: int = 200_000               # a 100k-frame task with images is ~100k members
    max_ratio: float = 200.0                 # uncompressed / compressed, for members above ...
    ratio_min_bytes: int = 1024**2           # ... this uncompressed size


def _sniff(data: bytes, name: str) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "json"
    if head.startswith(b"<"):
        return "xml"
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    return {"json": "json", "xml": "xml"}.get(suffix)


def _head(data: bytes) -> str:
    return data[:60].decode("utf-8", "replace")


def _member_plan(names: list[str], shown: str) -> tuple[str, list[str]]:
    """('coco', [instances files]) or ('xml', [annotations.xml]) from the member names of an export."""
    coco = sorted(n for n in names if re.fullmatch(r"annotations/instances_[^/]+\.json", n))
    if coco:
        return "coco", coco
    if "annotations.xml" in names:
        return "xml", ["annotations.xml"]
    root_xml = [n for n in names if "/" not in n and n.lower().endswith(".xml")]
    if len(root_xml) == 1:
        return "xml", root_xml
    root_json = [n for n in names if "/" not in n and n.lower().endswith(".json")]
    if len(root_json) == 1:
        return "coco", root_json
    raise AnnotationError(shown, "members", sorted(names)[:8], _FORMAT_REMEDY, problem="unrecognised export format")


def _check_members(zf: zipfile.ZipFile, shown: str, limits: ArchiveLimits) -> dict[str, zipfile.ZipInfo]:
    """Every member is checked before anything is extracted; returns files by normalized name."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise AnnotationError(shown, "members", len(infos), f"exports with more than {limits.max_members} members "
                              "are refused; split the task or raise ArchiveLimits.max_members",
                              problem="too many archive members")
    total = 0
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        raw = info.filename
        name = raw.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if (name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or "\x00" in name):
            raise AnnotationError(shown, "member name", raw, "refusing an archive whose members point outside it; "
                                  + _ALTERED_ARCHIVE, problem="path traversal in archive")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise AnnotationError(shown, "member type", raw,
                                  "refusing symbolic links in an export; " + _ALTERED_ARCHIVE,
                                  problem="symlink member in archive")
        if info.flag_bits & 0x1:
            raise AnnotationError(shown, "member flags", raw, "export without a password; " + _ALTERED_ARCHIVE,
                                  problem="encrypted member in archive")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise AnnotationError(shown, "uncompressed size", total, f"exports above {limits.max_total_bytes} bytes "
                                  "uncompressed are refused; split the task or raise ArchiveLimits.max_total_bytes",
                                  problem="archive too large")
        if info.file_size > limits.ratio_min_bytes and (
                info.compress_size == 0 or info.file_size / info.compress_size > limits.max_ratio):
            ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
            raise AnnotationError(shown, f"compression ratio of {raw}", round(ratio, 1),
                                  f"refusing members compressing more than {limits.max_ratio:g}:1 (zip bomb): import "
                                  "the zip as downloaded from CVAT; if this one is exactly that, raise "
                                  "ArchiveLimits.max_ratio", problem="suspicious compression ratio")
        if info.is_dir():
            continue
        key = "/".join(parts)
        if key in files:
            raise AnnotationError(shown, "member name", raw, _ALTERED_ARCHIVE, problem="duplicate archive member")
        files[key] = info
    return files


def _read_zip(path: Path, parsed: _Parsed, limits: ArchiveLimits) -> None:
    shown = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            files = _check_members(zf, shown, limits)
            kind, members = _member_plan(list(files), shown)
            with tempfile.TemporaryDirectory(prefix="cvat_import_") as tmp:
                for i, member in enumerate(members):
                    target = Path(tmp) / f"{i:04d}_{PurePosixPath(member).name}"  # flat: no member path used
                    info = files[member]
                    with zf.open(info) as src, open(target, "wb") as dst:
                        _copy_capped(src, dst, info.file_size, shown, member)
                    data = target.read_bytes()
                    subset = _coco_subset(member) if kind == "coco" else ""
                    source = f"{shown}!{member}"
                    if kind == "coco":
                        _parse_coco(data, source, subset, parsed)
                    else:
                        _parse_xml(data, source, subset, parsed)
    except zipfile.BadZipFile as exc:
        raise AnnotationError(shown, "zip", str(exc), _ALTERED_ARCHIVE, problem="unreadable zip archive") from exc
    except (RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:  # a member it cannot decompress
        raise AnnotationError(shown, "zip", str(exc), _ALTERED_ARCHIVE, problem="unreadable zip member") from exc


def _copy_capped(src, dst, limit: int, shown: str, member: str) -> None:
    written = 0
    while chunk := src.read(1 << 20):
        written += len(chunk)
        if written > limit:
            raise AnnotationError(shown, f"size of {member}", written, _ALTERED_ARCHIVE,
                                  problem="member larger than its declared size")
        dst.write(chunk)


def _read_directory(path: Path, parsed: _Parsed, limits: ArchiveLimits) -> str:
    """An unpacked export. Its sha256 is that of the annotation files: sha256 over 'name sha256' lines."""
    names = [p.relative_to(path).as_posix() for p in (path / "annotations").glob("instances_*.json")]
    names += [p.name for p in path.glob("*.xml")] + [p.name for p in path.glob("*.json")]
    kind, members = _member_plan(names, str(path))
    lines = []
    for member in members:
        file = path / member
        if file.stat().st_size > limits.max_total_bytes:
            raise AnnotationError(str(file), "size", file.stat().st_size, "split the task or raise "
                                  "ArchiveLimits.max_total_bytes", problem="file too large")
        data = file.read_bytes()
        lines.append(f"{member} {sha256_bytes(data)}\n")
        if kind == "coco":
            _parse_coco(data, str(file), _coco_subset(member), parsed)
        else:
            _parse_xml(data, str(file), "", parsed)
    return sha256_bytes("".join(lines).encode())


def _coco_subset(member: str) -> str:
    m = re.fullmatch(r"(?:.*/)?instances_(.+)\.json", member)
    return m.group(1) if m else ""
