"""Overlays of predictions for raters and for the report, drawn with PIL only.

- Rater overlay: image | the target's prediction blended over it, a legend of the classes in that prediction.
  It takes no competitor argument at all: showing a competitor's map would bias the rating.
- Report overlay: image | target | competitor, with a caption naming the pair, class, direction and distance.

Small images are upscaled by an integer factor (maps with nearest neighbour) so a person can see them.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from madseg.labels import IGNORE_INDEX, ClassList

ALPHA = 0.55  # weight of the class colour over the image where a foreground class is predicted
PAD = 6
SWATCH = 12
TEXT = (20, 20, 20)
CANVAS = (255, 255, 255)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def upscale_factor(height: int, width: int, min_side: int = 192) -> int:
    """The integer factor that brings the shorter side to at least ``min_side`` (1 for large images)."""
    return max(1, -(-min_side // max(1, min(height, width))))


def _check(image: np.ndarray, label_map: np.ndarray, classes: ClassList, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{what}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if label_map.ndim != 2:
        raise ValueError(f"{what}: label map must be (H, W), got {label_map.shape}")
    classes.validate_mask(label_map, what)


def _fit_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map to ``size`` (W, H), nearest neighbour (predictions may be at model resolution)."""
    if (label_map.shape[1], label_map.shape[0]) == size:
        return label_map
    return np.asarray(Image.fromarray(label_map.astype(np.uint8), "L").resize(size, Image.Resampling.NEAREST))


def blend(image: np.ndarray, label_map: np.ndarray, classes: ClassList) -> np.ndarray:
    """The class colours of ``label_map`` blended over ``image`` (background left as is): (H, W, 3) uint8."""
    colours = classes.palette[label_map].astype(np.float32)
    fg = (label_map != 0)[..., None]
    mixed = np.where(fg, (1 - ALPHA) * image.astype(np.float32) + ALPHA * colours, image.astype(np.float32))
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def _legend(classes: ClassList, present: Sequence[int], width: int) -> Image.Image:
    """Swatch + name for each class in ``present``, wrapped to ``width``."""
    swatches = tuple(
        ("ignore" if c == IGNORE_INDEX else classes.names[c], tuple(int(v) for v in classes.palette[c]))
        for c in present
    )
    return _legend_image(swatches, width)


# a round's hundreds of overlays share a handful of legends (callers only paste them)
@functools.lru_cache(maxsize=256)
def _legend_image(swatches: tuple[tuple[str, tuple[int, ...]], ...], width: int) -> Image.Image:
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = [(name, colour, SWATCH + 4 + int(probe.textlength(name, font=font)) + 10) for name, colour in swatches]
    line_h = SWATCH + 4
    lines, x = 1, PAD
    for *_, w in items:
        if x + w > width - PAD and x > PAD:
            lines, x = lines + 1, PAD
        x += w
    im = Image.new("RGB", (width, lines * line_h + PAD), CANVAS)
    draw = ImageDraw.Draw(im)
    x, y = PAD, PAD // 2
    for name, colour, w in items:
        if x + w > width - PAD and x > PAD:
            x, y = PAD, y + line_h
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=colour, outline=TEXT)
        draw.text((x + SWATCH + 4, y), name, fill=TEXT, font=font)
        x += w
    return im


def _text_strip(text: str, width: int) -> Image.Image:
    im = Image.new("RGB", (width, 14 + PAD), CANVAS)
    ImageDraw.Draw(im).text((PAD, PAD // 2), text, fill=TEXT, font=_font())
    return im


def _compose(panels: Sequence[tuple[str, np.ndarray]], footer: Sequence[Image.Image], scale: int) -> Image.Image:
    h, w = panels[0][1].shape[:2]
    ph, pw = h * scale, w * scale
    width = len(panels) * pw + (len(panels) + 1) * PAD
    title_h = 14 + PAD
    height = title_h + ph + PAD + sum(f.height for f in footer)
    canvas = Image.new("RGB", (width, height), CANVAS)
    draw = ImageDraw.Draw(canvas)
    for n, (title, arr) in enumerate(panels):
        x = PAD + n * (pw + PAD)
        draw.text((x, PAD // 2), title, fill=TEXT, font=_font())
        canvas.paste(Image.fromarray(arr).resize((pw, ph), Image.Resampling.NEAREST), (x, title_h))
    y = title_h + ph + PAD
    for f in footer:
        canvas.paste(f.crop((0, 0, width, f.height)) if f.width > width else f, (0, y))
        y += f.height
    return canvas


def _present(*maps: np.ndarray) -> list[int]:
    values = np.unique(np.concatenate([m.reshape(-1) for m in maps]))
    return [int(v) for v in values]


def rater_overlay(image: np.ndarray, target_map: np.ndarray, classes: ClassList, min_side: int = 192) -> Image.Image:
    """What a rater sees: image | target's prediction over the image, with a legend of the predicted classes.

    Args:
        image: (H, W, 3) uint8.
        target_map: (h, w) uint8 label map of the target (resized to the image with nearest neighbour).
        classes: class list with the palette.
        min_side: upscale so the shorter side is at least this many pixels.
    Returns:
        an RGB PIL image.
    """
    _check(image, target_map, classes, "rater overlay")
    tmap = _fit_map(target_map, (image.shape[1], image.shape[0]))
    scale = upscale_factor(*image.shape[:2], min_side)
    panels = [("image", image), ("prediction", blend(image, tmap, classes))]
    width = 2 * image.shape[1] * scale + 3 * PAD
    return _compose(panels, [_legend(classes, _present(tmap), width)], scale)


def report_overlay(
    image: np.ndarray,
    target_map: np.ndarray,
    competitor_map: np.ndarray | None,
    classes: ClassList,
    caption: str,
    competitor: str = "competitor",
    min_side: int = 192,
) -> Image.Image:
    """For the report: image | target | competitor (or image | target when there is no competitor), a caption
    (pair, class, direction, distance) and a legend of the classes in either map."""
    _check(image, target_map, classes, "report overlay")
    size = (image.shape[1], image.shape[0])
    maps = [_fit_map(target_map, size)]
    panels = [("image", image), ("target", blend(image, maps[0], classes))]
    if competitor_map is not None:
        _check(image, competitor_map, classes, f"report overlay ({competitor})")
        maps.append(_fit_map(competitor_map, size))
        panels.append((competitor, blend(image, maps[1], classes)))
    scale = upscale_factor(*image.shape[:2], min_side)
    width = len(panels) * image.shape[1] * scale + (len(panels) + 1) * PAD
    return _compose(panels, [_text_strip(caption, width), _legend(classes, _present(*maps), width)], scale)


def png_bytes(im: Image.Image) -> bytes:
    """Deterministic PNG bytes of a PIL image.

    zlib level 1: overlays are flat colour, so it is 2.6x faster to encode than the default 6 for 10 % more
    bytes (a round writes hundreds of them).
    """
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def comparison_overlay(
    image: np.ndarray,
    maps: Sequence[tuple[str, np.ndarray]],
    classes: ClassList,
    caption: str,
    min_side: int = 192,
) -> Image.Image:
    """The image beside any number of titled label maps (e.g. before | after | truth), a caption and a
    legend."""
    size = (image.shape[1], image.shape[0])
    fitted = []
    for title, label in maps:
        _check(image, label, classes, f"comparison overlay ({title})")
        fitted.append((title, _fit_map(label, size)))
    panels = [("image", image), *((title, blend(image, m, classes)) for title, m in fitted)]
    scale = upscale_factor(*image.shape[:2], min_side)
    width = len(panels) * image.shape[1] * scale + (len(panels) + 1) * PAD
    legend = _legend(classes, _present(*(m for _, m in fitted)), width)
    return _compose(panels, [_text_strip(caption, width), legend], scale)


@dataclass(frozen=True)
class CandidateOverlay:
    """What mining draws for one candidate: the image (H, W, 3) uint8, the target's and (if the candidate came
    from a competition) the competitor's label maps, and the report caption."""

    image: np.ndarray
    target_map: np.ndarray
    competitor_map: np.ndarray | None
    competitor: str
    caption: str


def drawing_workers(count: int) -> int:
    """Processes worth starting to draw ``count`` candidates: drawing and PNG encoding are most of a mining
    stage's time, but a process costs about a second to start, so a few, and none for a handful."""
    return min(4, os.cpu_count() or 1) if count >= 100 else 1


def candidate_pngs(
    items: Iterable[CandidateOverlay], classes: ClassList, min_side: int = 192, workers: int = 1
) -> Iterator[tuple[bytes, bytes]]:
    """(rater PNG, report PNG) of each item, in order. ``workers`` > 1 draws in that many processes; the bytes
    do not depend on it."""
    draw = functools.partial(_candidate_pngs, classes=classes, min_side=min_side)
    if workers <= 1:
        yield from map(draw, items)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:  # spawn: the caller may hold threads
        yield from pool.imap(draw, items, chunksize=16)


def _candidate_pngs(item: CandidateOverlay, classes: ClassList, min_side: int) -> tuple[bytes, bytes]:
    rater = rater_overlay(item.image, item.target_map, classes, min_side)
    report = report_overlay(
        item.image, item.target_map, item.competitor_map, classes, item.caption, item.competitor, min_side
    )
    return png_bytes(rater), png_bytes(report)
