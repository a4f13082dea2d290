"""The photo world's sources: real-photo cut-outs and scene photos from Debian packages, fetched once.

The selection is package data (``photo_sources.csv``: role = a class name or ``background``, the output name,
the package, the path inside it, and where a file's licence is written when not in the package's
``usr/share/doc/PKG/copyright``). A path ``ARCHIVE.rcc:/INNER`` names an entry of a Qt resource archive (GCompris
keeps its photos so). :func:`fetch_sources` downloads the packages with ``apt-get download`` (or takes the .deb
files of a folder), reads them in pure Python (ar + tar) and writes the normalised folder the photo world reads:

``objects/<class>/<name>.png`` (RGBA, cropped to the alpha's bounding box), ``backgrounds/<name>.jpg`` (RGB, the
shorter side at most :data:`BACKGROUND_SIDE`), ``licences/<package>/...`` (the copyright files the licences came
from) and ``manifest.csv`` (file, role, package, version, path, licence, copyright), sorted. The sources are
third-party files under their own licences (GPL-2, CC-BY-SA, ...): they are never committed.

The backgrounds are scenes (monuments, landscapes, forests, the sea, textures). Photos whose subject is itself a
thing of the cut-outs' kinds (a fig in a bowl, cups, paintbrushes, a wine glass, a leaf or grass in close-up, a
kite, boats) are left out: the truth calls every background pixel background, so such a photo would hide real
objects the truth denies, and the target's right answers there would count as failures (docs/photo_world.md).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from madseg.io.images import encode_jpeg
from madseg.stops import BadInput

log = logging.getLogger(__name__)

SELECTION_CSV = Path(__file__).with_name("photo_sources.csv")
DEFAULT_DEST = "data/photo_sources"
BACKGROUND_SIDE = 512  # enough for crops of 128-192 px worlds, and ~70 MB decoded per worker for 69 photos
BACKGROUND_QUALITY = 92
MANIFEST_COLUMNS = ["file", "role", "package", "version", "path", "licence", "copyright"]


def read_selection(path: Path = SELECTION_CSV) -> pd.DataFrame:
    """The selection table: one row per source file (role, name, package, path, licence_file), as shipped."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def packages(selection: pd.DataFrame | None = None) -> list[str]:
    """The Debian packages the selection takes files from, sorted."""
    table = read_selection() if selection is None else selection
    return sorted(set(table["package"]))


def output_file(role: str, name: str) -> str:
    """Where a selection row's file lands in the sources folder."""
    return f"backgrounds/{name}.jpg" if role == "background" else f"objects/{role}/{name}.png"


def dropped_files(manifest: pd.DataFrame) -> list[str]:
    """The files of a fetched folder's manifest that come from the selection's packages but that the selection no
    longer takes (a folder fetched by an older madseg), sorted."""
    selection = read_selection()
    taken = {output_file(role, name) for role, name in zip(selection["role"], selection["name"], strict=True)}
    ours = manifest["package"].isin(set(selection["package"]))
    return sorted(set(manifest.loc[ours, "file"]) - taken)


def how_to_fetch(selection: pd.DataFrame | None = None) -> str:
    """What a user runs to get the sources (for messages)."""
    return (
        f"run `madseg photos fetch` (it runs `apt-get download {' '.join(packages(selection))}`; "
        "or give the .deb files' folder with --debs DIR)"
    )


# ----------------------------------------------------------------------------------------------- archives
def read_ar(data: bytes) -> dict[str, bytes]:
    """The members of a Unix ``ar`` archive (a .deb is one: debian-binary, control.tar.*, data.tar.*) by name."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (no !<arch> magic)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are padded to an even offset
    return members


def read_rcc(data: bytes) -> dict[str, bytes | None]:
    """The files of a Qt binary resource archive (``.rcc``, format 1-3) by path (``/a/b.webp``).

    The header gives the offsets of the tree (nodes of 14 bytes, 22 from format 2), the data and the names
    (UTF-16BE). Zlib-compressed entries are inflated; zstd ones (flag 4, no Python reader here) map to None.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource archive (no qres magic)")
    version, tree, payload, names = struct.unpack(">iiii", data[4:20])
    node_size = 14 if version == 1 else 22
    files: dict[str, bytes | None] = {}

    def name_at(offset: int) -> str:
        at = names + offset
        (length,) = struct.unpack(">H", data[at : at + 2])
        return data[at + 6 : at + 6 + 2 * length].decode("utf-16-be")  # 2 bytes length, 4 bytes hash

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">iH", data[at : at + 6])
        path = f"{prefix}/{name_at(name_offset)}" if index else ""
        if flags & 2:  # a directory: its children are consecutive nodes
            count, first = struct.unpack(">ii", data[at + 6 : at + 14])
            stack.extend((child, path) for child in range(first, first + count))
            continue
        (data_offset,) = struct.unpack(">i", data[at + 10 : at + 14])
        start = payload + data_offset
        (size,) = struct.unpack(">I", data[start : start + 4])
        raw = data[start + 4 : start + 4 + size]
        if flags & 1:
            files[path] = zlib.decompress(raw[4:])  # 4 bytes of uncompressed length first
        elif flags & 4:
            files[path] = None
        else:
            files[path] = raw
    return dict(sorted(files.items()))


def read_deb(data: bytes, wanted: Iterable[str]) -> tuple[str, dict[str, bytes]]:
    """The version and the ``wanted`` files (paths relative to /, e.g. ``usr/share/x.png``) of a .deb.

    The data tarball is streamed (xz, gzip or bzip2; zstd is not read): only the wanted members are kept.
    Raises ValueError naming a wanted path that is missing or not a regular file.
    """
    members = read_ar(data)
    control = _tar_member(members, "control.tar")
    version = ""
    with tarfile.open(fileobj=io.BytesIO(control), mode="r:*") as tar:
        for info in tar:
            if info.name.lstrip("./") == "control":
                text = tar.extractfile(info).read().decode("utf-8", "replace")
                if m := re.search(r"^Version:\s*(\S+)", text, re.M):
                    version = m.group(1)
    want = set(wanted)
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(_tar_member(members, "data.tar")), mode="r|*") as tar:
        for info in tar:
            path = info.name.removeprefix("./")
            if path in want:
                if not info.isfile():
                    raise ValueError(f"{path}: not a regular file in the package (a link?)")
                found[path] = tar.extractfile(info).read()
    if missing := sorted(want - set(found)):
        raise ValueError(f"not in the package: {', '.join(missing[:5])}{' ...' * (len(missing) > 5)}")
    return version, found


def _tar_member(members: dict[str, bytes], stem: str) -> bytes:
    for name, data in members.items():
        if name.startswith(stem):
            if name.endswith(".zst"):
                raise ValueError(f"{name}: zstd-compressed, which Python's tarfile cannot read — use dpkg-deb -x")
            return lzma.decompress(data) if name.endswith(".xz") else data  # tarfile reads gz/bz2 itself
    raise ValueError(f"no {stem}.* in the .deb")


# ----------------------------------------------------------------------------------------------- licences
@dataclass(frozen=True)
class LicenceStanza:
    patterns: tuple[str, ...]
    licence: str
    copyright: str


def parse_copyright(text: str) -> list[LicenceStanza]:
    """The ``Files:`` stanzas of a machine-readable copyright file (DEP-5, or GCompris' README of the same fields
    with unindented continuation lines), in order; stanzas without Files (licence texts) are dropped."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if m := re.match(r"^([A-Za-z-]+):\s*(.*)$", line):
                key = m.group(1).lower()
                fields[key] = m.group(2).strip()
            elif key in ("files", "copyright") and line.strip() not in ("", "."):
                fields[key] += " " + line.strip()  # License's later lines are its text: only its name is kept
        if "files" in fields and "license" in fields:
            copyright = " ".join(fields.get("copyright", "").split())
            stanzas.append(LicenceStanza(tuple(fields["files"].split()), fields["license"], copyright))
    return stanzas


def licence_of(path: str, stanzas: list[LicenceStanza]) -> tuple[str, str]:
    """(licence, copyright) of the installed file ``path``: the last stanza whose pattern matches it (DEP-5's
    rule). Patterns name source paths, not installed ones, so a pattern matches a path that ends with it, or
    whose file name it names with any extension (GCompris ships its sea*.jpg as sea*.webp)."""
    name = PurePosixPath(path)
    found = ("", "")
    for stanza in stanzas:
        for pattern in stanza.patterns:
            plain = PurePosixPath(pattern)
            if (
                fnmatch.fnmatchcase(path, pattern)
                or fnmatch.fnmatchcase(path, f"*/{pattern}")
                or (not any(c in pattern for c in "*?[") and plain.stem == name.stem and plain.stem != "")
            ):
                found = (stanza.licence, stanza.copyright)
    return found


# ----------------------------------------------------------------------------------------------- images
def normalise_object(data: bytes, what: str) -> bytes:
    """A cut-out as RGBA PNG cropped to its alpha's bounding box (P/LA/L stamps converted)."""
    im = Image.open(io.BytesIO(data))
    im = im.convert("RGBA")
    box = im.getchannel("A").point(lambda a: 255 if a > 0 else 0).getbbox()
    if box is None:
        raise BadInput(f"{what}: fully transparent — not a cut-out")
    out = io.BytesIO()
    im.crop(box).save(out, format="PNG")
    return out.getvalue()


def normalise_background(data: bytes, side: int = BACKGROUND_SIDE) -> bytes:
    """A scene photo as RGB JPEG, shrunk so its shorter side is at most ``side``."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    scale = side / min(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    return encode_jpeg(np.asarray(im), BACKGROUND_QUALITY)


# ----------------------------------------------------------------------------------------------- fetch
def fetch_sources(dest: str | Path = DEFAULT_DEST, debs: str | Path | None = None) -> dict[str, int]:
    """Write the normalised sources folder ``dest`` (replacing it once complete) from the packages' .deb files:
    those in ``debs`` (``PKG_*.deb``), the rest downloaded with ``apt-get download``. Returns files per role.

    Raises BadInput naming the packages when one cannot be had (no apt-get, no network, not Debian).
    """
    dest = Path(dest)
    selection = read_selection()
    wanted_packages = packages(selection)
    with tempfile.TemporaryDirectory(prefix="madseg-photos-") as tmp:
        found = _debs_in(Path(debs), wanted_packages) if debs else {}
        if missing := [p for p in wanted_packages if p not in found]:
            found |= _apt_download(missing, Path(tmp), selection)
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            rows = []
            for package in wanted_packages:
                rows += _write_package(stage, package, found[package], selection[selection["package"] == package])
            manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("file").reset_index(drop=True)
            manifest.to_csv(stage / "manifest.csv", index=False, lineterminator="\n")
            _replace(stage, dest)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    counts = manifest["role"].value_counts().sort_index().to_dict()
    log.debug("photo sources in %s: %s", dest, counts)
    return counts


def _debs_in(folder: Path, wanted: list[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise BadInput(f"--debs {folder}: no such folder")
    found = {}
    for package in wanted:
        candidates = sorted(folder.glob(f"{package}_*.deb"))
        if candidates:
            found[package] = candidates[-1]  # the highest version where several lie side by side
    return found


def _apt_download(missing: list[str], folder: Path, selection: pd.DataFrame) -> dict[str, Path]:
    log.info("apt-get download %s", " ".join(missing))
    try:
        done = subprocess.run(["apt-get", "download", *missing], cwd=folder, capture_output=True, text=True)
        reason = done.stderr.strip().splitlines()[-1] if done.returncode else ""
    except FileNotFoundError:
        reason = "no apt-get here (not Debian or Ubuntu)"
    found = {} if reason else _debs_in(folder, missing)
    if reason or len(found) < len(missing):
        raise BadInput(
            f"photo sources: could not download {', '.join(missing)}: {reason or 'apt-get left no .deb'} — "
            f"on Debian 12 (or with network) run `apt-get download {' '.join(missing)}`, or fetch the .deb files "
            "from https://packages.debian.org/bookworm/ on a machine with network, then "
            "`madseg photos fetch --debs FOLDER`"
        )
    return found


def _write_package(stage: Path, package: str, deb: Path, rows: pd.DataFrame) -> list[list[str]]:
    log.info("reading %s", deb.name)
    doc = f"usr/share/doc/{package}/copyright"
    outer = {p.partition(":")[0] for p in [*rows["path"], *rows["licence_file"]] if p}
    try:
        version, files = read_deb(deb.read_bytes(), outer | {doc})
    except ValueError as e:
        raise BadInput(f"{deb}: {e}") from None
    rccs = {p: read_rcc(files[p]) for p in sorted(outer) if p.endswith(".rcc")}

    def content(path: str) -> bytes:
        archive, _, inner = path.partition(":")
        data = rccs[archive].get(inner) if inner else files[archive]
        if data is None:
            raise BadInput(f"{deb.name}: {path} is missing or zstd-compressed")
        return data

    licences: dict[str, list[LicenceStanza]] = {}
    for source in sorted({doc, *filter(None, rows["licence_file"])}):
        text = content(source)
        target = "copyright" if source == doc else _safe_name(source)
        _write(stage / "licences" / package / target, text)
        licences[source] = parse_copyright(text.decode("utf-8", "replace"))

    out = []
    for row in rows.itertuples():
        data = content(row.path)
        file = output_file(row.role, row.name)
        if row.role == "background":
            _write(stage / file, normalise_background(data))
        else:
            _write(stage / file, normalise_object(data, f"{package}:{row.path}"))
        inner = row.path.partition(":")[2] or row.path
        licence, holder = licence_of(inner, licences[row.licence_file or doc])
        if not licence and row.licence_file:  # not credited in the archive's own file: the package's applies
            licence, holder = licence_of(inner, licences[doc])
        out.append([file, row.role, package, version, row.path, licence, holder])
    return out


def _safe_name(path: str) -> str:
    archive, _, inner = path.partition(":")
    return "_".join(PurePosixPath(p).stem for p in (archive, inner) if p) + (PurePosixPath(inner or archive).suffix)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _replace(stage: Path, dest: Path) -> None:
    """Put the complete ``stage`` folder at ``dest``: a reader sees the old folder or the new one, never half."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    stage.rename(dest)
    if old is not None:
        shutil.rmtree(old)
