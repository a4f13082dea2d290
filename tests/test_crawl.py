"""crawl_index: sniffing, limits, odd modes, HTTP fetching with retries/timeouts/resume, deduplication."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

from madseg import crawl as C
from madseg.config import CrawlParams, parse_section
from madseg.crawl import inspection
from madseg.io.images import decode_rgb, image_id
from madseg.io.tables import write_csv

LIMITS = C.Limits(min_side=16, max_side=512, max_pixels=90_000, max_bytes=200_000)
FAST = C.FetchConfig(timeout_s=0.3, retries=1, backoff_s=0.01, workers=4, max_redirects=3)


# ------------------------------------------------------------------------------------------- test images
def scene(seed: int, size: int = 96) -> np.ndarray:
    """A photo-like synthetic scene (H, W, 3) uint8: smooth random background, a few shapes, mild noise."""
    r = np.random.default_rng(seed)
    bg = Image.fromarray(r.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    d = ImageDraw.Draw(bg)
    for _ in range(int(r.integers(2, 5))):
        x, y = r.integers(0, size, 2)
        s = int(r.integers(size // 10, size // 3))
        box = [int(x) - s, int(y) - s, int(x) + s, int(y) + s]
        fill = tuple(int(v) for v in r.integers(0, 256, 3))
        (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=fill)
    arr = np.asarray(bg, dtype=np.int16) + r.integers(-6, 7, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def enc(arr: np.ndarray | Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes (a decompression bomb shape)."""
    raw = bytearray(enc(np.zeros((1, 1, 3), np.uint8), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


def crop(arr: np.ndarray, frac: float) -> np.ndarray:
    k = max(1, round(arr.shape[0] * frac))
    return arr[k:-k, k:-k]


def resize(arr: np.ndarray, scale: float) -> np.ndarray:
    h, w = arr.shape[:2]
    return np.asarray(Image.fromarray(arr).resize((round(w * scale), round(h * scale)), Image.BILINEAR))


# ------------------------------------------------------------------------------------------ phash and index
def test_phash_is_64_bits_deterministic_and_validates():
    a = scene(1)
    h = C.phash(a)
    assert h == C.phash(a.copy()) and 0 <= h < 2**64 and len(C.phash_hex(h)) == 16
    assert C.phash(a[..., 0]) >= 0  # greyscale accepted
    with pytest.raises(ValueError, match="uint8"):
        C.phash(a.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        C.phash(np.zeros((8, 8, 4), np.uint8))


def test_phash_tolerates_reencoding_resizing_light_crops():
    for seed in range(20):
        a = scene(seed, 128)
        h = C.phash(a)
        for copy in (
            enc(a, quality=40),
            enc(resize(a, 0.6)),
            enc(resize(a, 1.5)),
            enc(crop(a, 0.01)),
        ):
            assert C.hamming(h, C.phash(np.asarray(Image.open(io.BytesIO(copy)).convert("RGB")))) <= 6


@pytest.mark.parametrize("threshold", [0, 3, 6, 9, 12, 13, 17])
def test_near_pairs_match_brute_force(threshold):
    r = np.random.default_rng(threshold)
    base = r.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    # plant neighbours at every distance up to threshold + 2, the flipped bits spread at random over the bands
    planted = [
        b ^ np.uint64(sum(1 << int(i) for i in r.choice(64, d, replace=False)))
        for b in base[:40]
        for d in range(threshold + 3)
    ]
    stored = np.concatenate([base, np.array(planted, dtype=np.uint64)])
    dist = np.bitwise_count(stored[:, None] ^ stored[None, :]).astype(np.int64)
    i, j, d = C.near_pairs(stored, threshold)
    want_i, want_j = np.nonzero(np.triu(dist <= threshold, 1))
    assert (i.tolist(), j.tolist(), d.tolist()) == (
        want_i.tolist(),
        want_j.tolist(),
        dist[want_i, want_j].tolist(),
    )
    queries = stored[::7]
    i, j, d = C.near_pairs(stored, threshold, queries, workers=1)
    want_i, want_j = np.nonzero(dist[:, ::7] <= threshold)
    assert (i.tolist(), j.tolist()) == (want_i.tolist(), want_j.tolist())


def test_near_pairs_edge_cases():
    with pytest.raises(ValueError, match="threshold"):
        C.near_pairs(np.zeros(3, np.uint64), 65)
    assert [len(a) for a in C.near_pairs(np.zeros(0, np.uint64), 6)] == [0, 0, 0]
    # all-equal hashes: every pair, each once; a 64-bit threshold pairs everything
    i, j, d = C.near_pairs(np.full(5, 2**64 - 1, np.uint64), 0)
    assert len(i) == 10 and (d == 0).all() and (i < j).all()
    assert len(C.near_pairs(np.array([0, 2**64 - 1, 5], np.uint64), 64)[0]) == 3


def test_params_defaults_are_the_librarys():
    """crawl.Limits / FetchConfig and config.CrawlParams declare the same defaults; they must not drift."""
    params = CrawlParams()
    for config in (C.Limits(), C.FetchConfig()):
        for f in dataclasses.fields(config):
            assert getattr(params, f.name) == getattr(config, f.name), f.name


def test_limits_validate():
    with pytest.raises(ValueError, match="min_side"):
        C.Limits(min_side=100, max_side=50)
    with pytest.raises(ValueError, match="max_pixels"):
        C.Limits(max_pixels=0)


# ------------------------------------------------------------------------------------------ single images
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (b"this is text, not a jpeg\n" * 10, "not_an_image"),
        (enc(scene(0))[:1500], "truncated"),
        (enc(np.zeros((8, 40, 3), np.uint8), "PNG"), "too_small"),
        (enc(np.zeros((20, 600, 3), np.uint8), "PNG"), "too_large"),
        (enc(np.zeros((400, 400, 3), np.uint8), "PNG"), "decompression_bomb"),
        (png_claiming(50_000, 50_000), "decompression_bomb"),  # refused from the header, never decoded
    ],
)
def test_inspect_bytes_rejects(data, reason):
    out = C.inspect_bytes(data, source="s", path="p", limits=LIMITS)
    assert isinstance(out, C.Reject) and out.reason == reason, out


def test_header_is_checked_before_decoding():
    # a header within limits but no pixel data: the decode is what fails, after the header checks passed
    out = C.inspect_bytes(png_claiming(200, 200), source="s", path="p", limits=LIMITS)
    assert out.reason in ("truncated", "corrupt")
    # over our max_pixels (but under PIL's own guard): refused from the header, so not reported as truncated
    out = C.inspect_bytes(png_claiming(1000, 1000), source="s", path="p", limits=LIMITS)
    assert out.reason == "decompression_bomb" and "max_pixels" in out.detail
    # far over PIL's own guard too: still the same reason
    out = C.inspect_bytes(png_claiming(50_000, 50_000), source="s", path="p", limits=LIMITS)
    assert out.reason == "decompression_bomb"


def test_inspect_bytes_accepts_and_ids_by_content():
    data = enc(scene(3, 64), "PNG")
    out = C.inspect_bytes(data, source="s", path="p", limits=LIMITS)
    assert isinstance(out, C.ImageRecord)
    assert (out.id, out.width, out.height, out.bytes) == (image_id(data), 64, 64, len(data))


def odd_mode_files() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (bytes, (width, height) after EXIF orientation)."""
    a = scene(10, 64)
    rect = scene(11, 96)[:48]  # 96 wide, 48 high
    g16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rgba = np.dstack([scene(12, 64), np.full((64, 64), 128, np.uint8)])
    return {
        "gray16.png": (enc(Image.fromarray(g16), "PNG"), (64, 64)),
        "cmyk.jpg": (enc(Image.fromarray(scene(13, 64)).convert("CMYK")), (64, 64)),
        "palette.png": (
            enc(Image.fromarray(scene(14, 64)).convert("P", palette=Image.ADAPTIVE), "PNG"),
            (64, 64),
        ),
        "palette.gif": (enc(Image.fromarray(scene(15, 64)).convert("P"), "GIF"), (64, 64)),
        "rgba.png": (enc(Image.fromarray(rgba, "RGBA"), "PNG"), (64, 64)),
        "gray.jpg": (enc(Image.fromarray(a[..., 1], "L")), (64, 64)),
        "rotated.jpg": (enc(Image.fromarray(rect), exif=exif.tobytes()), (48, 96)),
        "sub/deeper/plain.webp": (enc(scene(16, 64), "WEBP"), (64, 64)),
        "no_extension": (enc(scene(17, 64), "BMP"), (64, 64)),
        "tiff.tif": (enc(scene(18, 64), "TIFF"), (64, 64)),
    }


def test_local_folder_odd_modes_and_unreadables(tmp_path):
    root = tmp_path / "pool"
    files = odd_mode_files()
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "dir.jpg").mkdir()  # a directory with an image's name is walked into, not read
    (root / "dir.jpg" / "inner.png").write_bytes(enc(scene(19, 64), "PNG"))
    (root / "broken.jpg").symlink_to(root / "does_not_exist.jpg")
    os.mkfifo(root / "fifo.jpg")  # opening it would block forever: it must be refused from its stat
    (tmp_path / "elsewhere").mkdir()
    (root / "linked_dir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "text.jpg").write_text("not an image")

    res = C.crawl(folders=[root], limits=LIMITS, threshold=6, decode_workers=1)
    idx = res.index.set_index("source")
    for name, (data, (w, h)) in files.items():
        src = (root / name).as_posix()
        assert src in idx.index, (name, res.rejects)
        row = idx.loc[src]
        assert (row["width"], row["height"], row["id"], row["path"]) == (w, h, image_id(data), src), name
    assert (root / "dir.jpg" / "inner.png").as_posix() in idx.index
    reasons = dict(zip(res.rejects["source"], res.rejects["reason"], strict=True))
    assert reasons == {
        (root / "broken.jpg").as_posix(): "unreadable",
        (root / "fifo.jpg").as_posix(): "unreadable",
        (root / "linked_dir").as_posix(): "unreadable",
        (root / "text.jpg").as_posix(): "not_an_image",
    }
    assert len(res.index) + len(res.rejects) == len(files) + 5
    assert list(res.index["id"]) == sorted(res.index["id"])


def test_overlapping_folders_list_a_file_once_and_the_tables_are_written_in_chunks(tmp_path, monkeypatch):
    root = tmp_path / "pool"
    for i in range(6):
        (root / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"sub{i % 2}" / f"{i}.png").write_bytes(enc(scene(300 + i, 48), "PNG"))
    monkeypatch.setattr("madseg.crawl.spool._CHUNK", 2)  # several chunks per table
    with C.crawl(folders=[root, root / "sub1"], limits=LIMITS, threshold=6, decode_workers=1) as res:
        assert len(res.index) == 6 and res.summary()["rejected_duplicate_source"] == 3
        assert set(res.rejects["source"]) == {(root / "sub1" / f"{i}.png").as_posix() for i in (1, 3, 5)}
        res.write(tmp_path / "pool.csv", tmp_path / "rejects.csv")
        write_csv(tmp_path / "whole.csv", res.index)
    assert (tmp_path / "pool.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert pd.read_csv(tmp_path / "rejects.csv")["reason"].tolist() == ["duplicate_source"] * 3


def test_odd_modes_decode_to_the_right_pixels():
    files = odd_mode_files()
    for data, (w, h) in files.values():
        rgb = decode_rgb(data)
        assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)
    g = decode_rgb(files["gray16.png"][0])
    assert g[0, 0, 0] == 0 and g[-1, -1, 0] == 255  # 16-bit range mapped onto 8 bits, not clipped
    rot = decode_rgb(files["rotated.jpg"][0])
    upright = np.asarray(Image.open(io.BytesIO(files["rotated.jpg"][0])).convert("RGB")).transpose(1, 0, 2)[:, ::-1]
    assert rot.shape == upright.shape and np.abs(rot.astype(int) - upright).max() == 0


def test_inspect_files_process_pool_matches_in_process(tmp_path, monkeypatch):
    items = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.jpg"
        p.write_bytes(enc(scene(100 + i, 48)) if i != 5 else b"junk")
        items.append((p.as_posix(), p.as_posix()))
    serial = C.inspect_files(items, LIMITS, workers=1)
    monkeypatch.setattr(inspection, "_MIN_POOL_ITEMS", 0)
    assert C.inspect_files(items, LIMITS, workers=2) == serial
    assert sum(isinstance(r, C.Reject) for r in serial) == 1


# -------------------------------------------------------------------------------------------- dedup (pure)
def rec(i: str, h: int, w: int = 64, n: int = 1000, source: str | None = None) -> C.ImageRecord:
    return C.ImageRecord(i, source or f"src_{i}", f"p_{i}", w, w, h, n)


def test_deduplicate_keeps_the_first_source_of_exact_and_near_duplicates():
    recs = [
        rec("aa", 0, source="z/copy.jpg"),
        rec("aa", 0, source="a/orig.jpg"),
        rec("bb", 0b111, w=128, source="b/bigger_copy.jpg"),  # near aa (3 bits); larger, but sorts later
        rec("cc", 0xFFFF_0000_0000_0000, source="c/x.jpg"),  # far from aa
        rec("dd", 0xFFFF_0000_0000_0000 ^ 0b11, source="a/c_copy.jpg"),  # near cc, sorts first: kept
    ]
    kept, rejects = C.deduplicate(recs, threshold=6)
    assert [(r.id, r.source) for r in kept] == [("aa", "a/orig.jpg"), ("dd", "a/c_copy.jpg")]
    got = {(r.source, r.reason) for r in rejects}
    assert got == {
        ("z/copy.jpg", "exact_duplicate"),
        ("b/bigger_copy.jpg", "near_duplicate"),
        ("c/x.jpg", "near_duplicate"),
    }
    assert any("of aa (a/orig.jpg), hamming 3" in r.detail for r in rejects)


def test_deduplicate_does_not_chain():
    # 0 -- 5 bits -- x -- 5 bits -- y (10 bits from 0): y is not within 6 of the kept 0, so it stays
    x, y = 0b11111, 0b11111_11111
    kept, rejects = C.deduplicate([rec("a", 0, w=90), rec("b", x, w=80), rec("c", y, w=70)], threshold=6)
    assert [r.id for r in kept] == ["a", "c"] and [r.source for r in rejects] == ["src_b"]


def test_colour_layout_vetoes_luminance_lookalikes():
    # a blue and a red disc of equal luminance on one background: pHash sees luminance only. (The benchmark's
    # random scenes had two such pairs within 6 bits.) Give both the same hash to plant the collision.
    def disc(colour):
        im = Image.new("RGB", (96, 96), (120, 120, 120))
        ImageDraw.Draw(im).ellipse([10, 10, 86, 86], fill=colour)
        return np.asarray(im)

    blue, red = disc((0, 60, 255)), disc((215, 0, 0))
    recs = [C.inspect_bytes(enc(a), source=n, path="", limits=LIMITS) for n, a in (("b", blue), ("r", red))]
    assert C.hamming(recs[0].phash, recs[1].phash) <= 12
    recs[1] = dataclasses.replace(recs[1], phash=recs[0].phash)
    assert C.color_distance(recs[0].layout, recs[1].layout) > 5
    kept, rejects = C.deduplicate(recs, threshold=6)
    assert len(kept) == 2 and rejects == []
    # the same pair under a lax colour limit merges: the veto is what keeps them apart
    kept, rejects = C.deduplicate(recs, threshold=6, max_color_diff=255)
    assert len(kept) == 1 and rejects[0].reason == "near_duplicate"
    with pytest.raises(ValueError, match="max_color_diff"):
        C.deduplicate(recs, threshold=6, max_color_diff=-1)
    with pytest.raises(ValueError, match="uint8"):
        C.color_layout(blue.astype(np.float32))


def test_deduplicate_references_exclude_their_copies():
    a, b = scene(700, 96), scene(701, 96)
    ref = C.inspect_bytes(enc(a), source="voc/a.jpg", path="", limits=LIMITS)
    copy = C.inspect_bytes(enc(resize(a, 0.8), quality=60), source="pool/a_copy.jpg", path="", limits=LIMITS)
    other = C.inspect_bytes(enc(b), source="pool/b.jpg", path="", limits=LIMITS)
    kept, rejects = C.deduplicate([copy, other], threshold=6, references=[ref])
    assert [r.source for r in kept] == ["pool/b.jpg"]
    assert [(r.source, r.reason) for r in rejects] == [("pool/a_copy.jpg", "near_duplicate_of_reference")]
    assert rejects[0].detail.startswith("of voc/a.jpg, hamming")


def test_deduplicate_is_order_independent():
    r = np.random.default_rng(0)
    recs = [rec(f"{i:03d}", int(r.integers(0, 2**12)), w=int(r.integers(32, 40))) for i in range(200)]
    k1, r1 = C.deduplicate(recs, threshold=4)
    k2, r2 = C.deduplicate(recs[::-1], threshold=4)
    assert k1 == k2 and sorted(r1, key=str) == sorted(r2, key=str)


# the shipped defaults (params.yaml repeats them): the claims below hold for what a user runs
DEFAULTS = dict(threshold=CrawlParams().near_dup_threshold, max_color_diff=CrawlParams().near_dup_max_color_diff)


def test_threshold_does_not_merge_distinct_images_but_merges_planted_copies():
    originals = [scene(1000 + s, 96) for s in range(80)]
    recs = []
    for s, a in enumerate(originals):
        data = enc(a, quality=92)
        recs.append(C.inspect_bytes(data, source=f"orig/{s:03d}.jpg", path="", limits=LIMITS))
    kept, rejects = C.deduplicate(recs, **DEFAULTS)
    assert len(kept) == len(originals) and rejects == []  # no genuinely different scene merged
    copies = []
    for s, a in enumerate(originals[:20]):
        variant = (enc(a, quality=35), enc(resize(a, 0.7)), enc(crop(a, 0.01)), enc(a, "PNG"))[s % 4]
        copies.append(C.inspect_bytes(variant, source=f"copy/{s:03d}", path="", limits=LIMITS))
    kept, rejects = C.deduplicate(recs + copies, **DEFAULTS)
    group = lambda source: int(source.split("/")[1][:3])  # noqa: E731
    # one image of each planted pair is kept (the larger / heavier one), and only those pairs merge
    assert sorted(group(r.source) for r in kept) == list(range(len(originals)))
    assert sorted(group(r.source) for r in rejects) == list(range(20))
    assert {r.reason for r in rejects} == {"near_duplicate"}


# ---------------------------------------------------------------------------------------------- URL lists
def test_iter_url_list():
    items = list(C.iter_url_list("# comment\n\nhttp://a/x.jpg\n  https://b/y  \nftp://c/z\nhttp://a/x.jpg\n"))
    assert items == [
        "http://a/x.jpg",
        "https://b/y",
        C.Reject("ftp://c/z", "bad_url", "only http(s) URLs are fetched"),
        "http://a/x.jpg",
    ]  # fmt: skip  (the spool rejects the repeat: see the HTTP test)


def test_journal_ignores_a_torn_last_line(tmp_path):
    j = C.Journal(tmp_path / "j.jsonl")
    j.append({"url": "u1", "status": "reject", "reason": "http_404", "detail": ""})
    with (tmp_path / "j.jsonl").open("ab") as f:
        f.write(b'{"url": "u2", "sta')
    assert list(j.load()) == ["u1"]


# ------------------------------------------------------------------------------------------- HTTP server
class Server:
    """A tiny HTTP server on 127.0.0.1 (free port) with planted routes; counts hits per path."""

    def __init__(self, routes: dict[str, tuple]) -> None:
        self.routes = routes
        self.hits: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def do_GET(self):
                with lock:
                    outer.hits[self.path] += 1
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                kind, *args = route
                if kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", args[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind == "status":
                    self.send_error(args[0])
                    return
                if kind == "slow":
                    time.sleep(args[0])
                body = args[-1]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")  # lies for text; never trusted
                if kind != "nolength":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def noise_png(size: int) -> bytes:
    return enc(np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8), "PNG")


def test_http_crawl_every_case_lands_with_its_reason(tmp_path):
    a, b, c, d, e = (scene(s, 128) for s in (200, 201, 202, 203, 204))
    a_jpg = enc(a)
    ref = tmp_path / "ref" / "JPEGImages"
    ref.mkdir(parents=True)
    (ref / "e.jpg").write_bytes(enc(e))
    heavy = noise_png(270)  # ~220 kB > max_bytes 200 kB, but within the pixel limits
    assert len(heavy) > LIMITS.max_bytes
    routes = {
        "/a.jpg": ("ok", a_jpg),
        "/b.png": ("ok", enc(b, "PNG")),
        "/c.jpg": ("ok", enc(c)),
        "/x_copy_of_a.jpg": ("ok", a_jpg),
        "/a_q40.jpg": ("ok", enc(a, quality=40)),
        "/a_small.jpg": ("ok", enc(resize(a, 0.7))),
        "/e_from_benchmark.jpg": ("ok", enc(resize(e, 0.8), quality=70)),
        "/truncated.jpg": ("ok", enc(c)[: len(enc(c)) // 2]),
        "/text.jpg": ("ok", b"<html>not an image</html>"),
        "/empty.jpg": ("ok", b""),
        "/go": ("redirect", "/hidden/d.jpg"),
        "/hidden/d.jpg": ("ok", enc(d)),
        "/loop": ("redirect", "/loop"),
        "/slow.jpg": ("slow", 3.0, enc(scene(205))),
        "/huge.png": ("ok", enc(np.zeros((40, 600, 3), np.uint8), "PNG")),
        "/bomb.png": ("ok", png_claiming(30_000, 30_000)),
        "/tiny.png": ("ok", enc(np.zeros((10, 10, 3), np.uint8), "PNG")),
        "/heavy.png": ("ok", heavy),
        "/heavy_nolength.png": ("nolength", heavy),
        "/err500.jpg": ("status", 500),
    }
    want = {
        "/a.jpg": "indexed",
        "/b.png": "indexed",
        "/c.jpg": "indexed",
        "/go": "indexed",
        "/x_copy_of_a.jpg": "exact_duplicate",
        "/a_q40.jpg": "near_duplicate",
        "/a_small.jpg": "near_duplicate",
        "/e_from_benchmark.jpg": "near_duplicate_of_reference",
        "/truncated.jpg": "truncated",
        "/text.jpg": "not_an_image",
        "/empty.jpg": "empty_file",
        "/missing.jpg": "http_404",
        "/loop": "too_many_redirects",
        "/slow.jpg": "timeout",
        "/huge.png": "too_large",
        "/bomb.png": "decompression_bomb",
        "/tiny.png": "too_small",
        "/heavy.png": "too_many_bytes",
        "/heavy_nolength.png": "too_many_bytes",
        "/err500.jpg": "http_500",
    }
    with Server(routes) as srv:
        listing = "\n".join(srv.url(p) for p in want) + f"\nnot-a-url\n{srv.url('/a.jpg')}\n"
        t0 = time.monotonic()
        res = C.crawl(
            urls=C.iter_url_list(io.StringIO(listing)),  # a file's lines, as the stage streams them
            store_dir=tmp_path / "store",
            reference_sets=[ref],
            limits=LIMITS,
            fetch=FAST,
            threshold=6,
            decode_workers=1,
        )
        elapsed = time.monotonic() - t0
    repeat = res.rejects["reason"] == "duplicate_source"  # the URL listed twice: fetched once
    assert res.rejects[repeat].values.tolist() == [
        [srv.url("/a.jpg"), "duplicate_source", "listed twice in the URL list"]
    ]
    got = {s.removeprefix(srv.base): "indexed" for s in res.index["source"]}
    got.update({s.removeprefix(srv.base): r for s, r in res.rejects[~repeat][["source", "reason"]].values})
    assert got.pop("not-a-url") == "bad_url"
    assert got == want
    assert srv.hits["/a.jpg"] == 1
    assert len(res.index) + len(res.rejects) == len(want) + 2  # nothing dropped, nothing counted twice
    assert elapsed < 2.5, elapsed  # the 3 s endpoint timed out (0.3 s, one retry)
    assert srv.hits["/slow.jpg"] == 2 and srv.hits["/err500.jpg"] == 2  # bounded retries
    assert srv.hits["/missing.jpg"] == 1  # a 404 is final: not retried
    # URL images are read from the content-addressed store, named by their id
    row = res.index.set_index("source").loc[srv.url("/go")]
    assert Path(row["path"]).name == f"{row['id']}.jpg" and Path(row["path"]).read_bytes() == enc(d)
    assert res.summary()["rejected_near_duplicate"] == 2


def test_interrupted_crawl_resumes_without_refetching(tmp_path):
    bodies = {f"/img{i}.jpg": enc(scene(300 + i, 64)) for i in range(10)}
    routes = {p: ("ok", b) for p, b in bodies.items()} | {"/gone.jpg": ("status", 410)}
    paths_ = [*sorted(bodies), "/gone.jpg"]
    cfg = dataclasses.replace(FAST, workers=2)

    class Interrupt(Exception):
        pass

    def interrupt_after(n):
        seen = []

        def cb(entry):
            seen.append(entry)
            if len(seen) == n:
                raise Interrupt

        return cb

    with Server(routes) as srv:
        urls = [srv.url(p) for p in paths_]
        kw = dict(urls=urls, store_dir=tmp_path / "store", limits=LIMITS, fetch=cfg, decode_workers=1)
        with pytest.raises(Interrupt):
            C.crawl(**kw, on_fetched=interrupt_after(4))
        first = sum(srv.hits.values())
        assert 4 <= first < len(paths_)  # interrupted part-way
        res = C.crawl(**kw)
        assert all(n == 1 for n in srv.hits.values()), srv.hits  # nothing fetched twice
        assert sum(srv.hits.values()) == len(paths_)
        again = C.crawl(**kw)  # a third run fetches nothing at all and gives the same tables
        assert sum(srv.hits.values()) == len(paths_)
    assert len(res.index) == 10 and list(res.rejects["reason"]) == ["http_410"]
    pd.testing.assert_frame_equal(res.index, again.index)
    pd.testing.assert_frame_equal(res.rejects, again.rejects)


def test_vanished_store_file_is_fetched_again(tmp_path):
    with Server({"/a.jpg": ("ok", enc(scene(400, 64)))}) as srv:
        kw = dict(urls=[srv.url("/a.jpg")], store_dir=tmp_path / "s", limits=LIMITS, fetch=FAST, decode_workers=1)
        res = C.crawl(**kw)
        Path(res.index["path"][0]).unlink()
        res2 = C.crawl(**kw)
        assert srv.hits["/a.jpg"] == 2
    pd.testing.assert_frame_equal(res.index, res2.index)


# -------------------------------------------------------------------------------------------------- stage
def repo_crawl_params() -> CrawlParams:
    """The crawl section of the repository's params.yaml alone (other sections' edits cannot break us)."""
    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    return parse_section(CrawlParams, raw["crawl"], "params.yaml:crawl")


def test_stage_writes_sorted_tables_byte_identically(tmp_path, monkeypatch):
    from madseg.stages import crawl_index

    monkeypatch.chdir(tmp_path)
    pool = Path("pool")
    pool.mkdir()
    for i in range(6):
        (pool / f"{i}.jpg").write_bytes(enc(scene(500 + i, 64)))
    (pool / "5_copy.jpg").write_bytes(enc(scene(505, 64)))
    (pool / "notes.txt").write_text("hello")
    crawl = dataclasses.replace(repo_crawl_params(), folders=("pool",), reference_sets=(), decode_workers=1)
    params = SimpleNamespace(crawl=crawl)  # the stage reads only its own section
    crawl_index.run(params)
    first = (Path("data/index/pool.csv").read_bytes(), Path("data/index/rejects.csv").read_bytes())
    crawl_index.run(params)
    assert (Path("data/index/pool.csv").read_bytes(), Path("data/index/rejects.csv").read_bytes()) == first
    index = pd.read_csv("data/index/pool.csv", dtype={"id": str, "phash": str})
    assert list(index.columns) == C.INDEX_COLUMNS and len(index) == 6
    assert list(index["id"]) == sorted(index["id"]) and index["phash"].str.len().eq(16).all()
    rejects = pd.read_csv("data/index/rejects.csv")
    assert sorted(rejects["reason"]) == ["exact_duplicate", "not_an_image"]

    Path("urls.txt").write_text("# no server in this test\nftp://example.org/a.jpg\n")
    with_urls = SimpleNamespace(crawl=dataclasses.replace(crawl, url_list="urls.txt"))
    crawl_index.run(with_urls)
    rejects = pd.read_csv("data/index/rejects.csv")
    assert sorted(rejects["reason"]) == ["bad_url", "exact_duplicate", "not_an_image"]
    missing = SimpleNamespace(crawl=dataclasses.replace(crawl, url_list="nope.txt"))
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        crawl_index.run(missing)
    empty = SimpleNamespace(crawl=dataclasses.replace(crawl, folders=(), url_list=None))
    with pytest.raises(ValueError, match="neither"):
        crawl_index.run(empty)


# ------------------------------------------------------------------------------------------ the demo pool
DEMO = Path(__file__).parents[1] / "data" / "world"


def _names(cell: str) -> set[str]:
    return {Path(cell).name, Path(cell).stem}


@pytest.mark.slow
@pytest.mark.skipif(not (DEMO / "pool" / "images").is_dir(), reason="demo world not generated (dvc repro make_world)")
def test_demo_pool_near_duplicates(capsys):
    """On the demo pool every near-duplicate merge must be a planted copy, never two different scenes."""
    p = repo_crawl_params()  # the demo's own thresholds
    res = C.crawl(
        folders=[DEMO / "pool" / "images"],
        reference_sets=[DEMO / "voc" / "JPEGImages"],
        limits=C.Limits(min_side=p.min_side, max_side=p.max_side),
        threshold=p.near_dup_threshold,
        max_color_diff=p.near_dup_max_color_diff,
    )
    near = res.rejects[res.rejects["reason"] == "near_duplicate"]
    ref = res.rejects[res.rejects["reason"] == "near_duplicate_of_reference"]
    exact = res.rejects[res.rejects["reason"] == "exact_duplicate"]
    truth = DEMO / "pool_truth" / "duplicates.csv"
    planted = pd.read_csv(truth, dtype=str, keep_default_na=False) if truth.exists() else pd.DataFrame()
    rows = [set().union(*(_names(c) for c in row if c)) for row in planted.itertuples(index=False)]
    # a merge is planted when one row of duplicates.csv names both the rejected image and the kept one
    false = []
    for source, detail in zip(near["source"], near["detail"], strict=True):
        kept = detail.split(" (", 1)[1].split("), hamming", 1)[0]
        if not any(_names(source) & r and _names(kept) & r for r in rows):
            false.append((source, detail))
    with capsys.disabled():
        print(
            f"\ndemo pool: {len(res.index)} indexed, {len(near)} near-duplicates merged "
            f"({len(false)} not planted), {len(exact)} exact, {len(ref)} of references; "
            f"{len(planted)} planted rows"
        )
    if truth.exists():
        assert not false, false[:5]
