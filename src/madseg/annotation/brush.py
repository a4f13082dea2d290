"""Label Studio brush results <-> VOC label maps (class index per pixel, 255 = ignore).

Label Studio stores a brush region as its own bit-packed run-length code of an RGBA raster (not COCO RLE).
We write one region per class with the layer at 0/255 in all four channels, which the UI shows as opaque paint
and which decodes back exactly. Strokes drawn in the UI are separate regions with anti-aliased alpha (1..255).

Decoding rule (the one place it is stated; tests/test_annotation_brush.py pins it):

* a pixel belongs to a region where its alpha is > 127 (``ALPHA_THRESHOLD``): anti-aliased fringes of a stroke
  count for the stroke only where they are more than half opaque;
* all regions of a label are merged (a union);
* **unpainted pixels are background** (class 0): annotators paint objects, as in VOC, and a task where
  nothing is painted means "no object here";
* **where regions overlap, the later result wins** (painter's order). Label Studio lists results in the
  order the regions were created, so a stroke painted over a pre-annotation to correct it replaces it, as
  it looks on screen. Painting the ``background`` label erases, painting the ignore label marks 255 (VOC's
  void border, and anything the annotator cannot decide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from madseg.labels import IGNORE_INDEX, ClassList

ALPHA_THRESHOLD = 127  # alpha > this counts as painted
IGNORE_LABEL = "ignore"  # the label that paints IGNORE_INDEX (VOC's void / boundary)


def label_names(classes: ClassList) -> list[str]:
    """The BrushLabels labels for a class list: every class (background included, as an eraser) and ignore."""
    if IGNORE_LABEL in classes.names:
        raise ValueError(f"class name {IGNORE_LABEL!r} is reserved for the ignore label; classes: {classes.names}")
    return [*classes.names, IGNORE_LABEL]


def encode_layer(layer: np.ndarray) -> list[int]:
    """Encode a boolean layer (H, W) as a Label Studio brush RLE (0/255 in all four RGBA channels)."""
    if layer.ndim != 2:
        raise ValueError(f"layer must be (H, W), got shape {layer.shape}")
    # imported here, not at the top: label_studio_sdk.converter pulls in nltk (~2 s for every stage)
    from label_studio_sdk.converter.brush import encode_rle

    rgba = np.repeat(np.where(layer.reshape(-1), 255, 0).astype(np.uint8), 4)
    return [int(v) for v in encode_rle(rgba)]


def decode_alpha(rle: Sequence[int], height: int, width: int, what: str = "brush region") -> np.ndarray:
    """Decode a brush RLE into its alpha channel: (height, width) uint8.

    Raises ValueError naming ``what`` if the code is corrupt or holds a raster of another size.
    """
    from label_studio_sdk.converter.brush import decode_rle

    try:
        flat = decode_rle(list(rle))
    except (IndexError, ValueError, TypeError) as e:
        raise ValueError(f"{what}: corrupt brush RLE ({type(e).__name__}: {e})") from None
    if flat.size != height * width * 4:
        raise ValueError(
            f"{what}: brush RLE holds {flat.size // 4} pixels, expected {height}x{width} = {height * width}"
        )
    return flat.reshape(height, width, 4)[:, :, 3].copy()


def mask_to_results(
    mask: np.ndarray, classes: ClassList, *, from_name: str = "label", to_name: str = "image"
) -> list[dict[str, Any]]:
    """Brush results for a label map: one region per foreground class present, plus one for ignore pixels.

    Args:
        mask: (H, W) uint8 class indices, 255 = ignore.
    Returns:
        Label Studio result dicts (type ``brushlabels``, format ``rle``) in class order. Background is left
        unpainted (the decoding rule reads unpainted pixels as background), so the round trip is exact.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    classes.validate_mask(mask, "mask")
    names = label_names(classes)
    height, width = mask.shape
    results = []
    present = [int(v) for v in np.unique(mask) if v != 0]
    for value in present:
        name = IGNORE_LABEL if value == IGNORE_INDEX else names[value]
        results.append(
            {
                "id": f"{name}-{value}",
                "type": "brushlabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": encode_layer(mask == value), "brushlabels": [name]},
            }
        )
    return results


def results_to_mask(
    results: Sequence[dict[str, Any]],
    classes: ClassList,
    *,
    height: int,
    width: int,
    from_name: str = "label",
    what: str = "annotation",
) -> np.ndarray:
    """Decode brush results into a label map (H, W) uint8 by the module's rule (threshold, union, later wins).

    Results of other types or other control tags are ignored. Raises ValueError naming ``what`` for a region
    with an unknown label, no label or several, a format other than rle, or a raster of another size.
    """
    names = label_names(classes)
    value_of = {n: i for i, n in enumerate(classes.names)} | {IGNORE_LABEL: IGNORE_INDEX}
    mask = np.zeros((height, width), dtype=np.uint8)  # unpainted = background
    for k, result in enumerate(results):
        if result.get("type") != "brushlabels" or result.get("from_name", from_name) != from_name:
            continue
        where = f"{what}, region {k} ({result.get('id', '?')})"
        value = result.get("value") or {}
        labels = value.get("brushlabels") or []
        if len(labels) != 1 or labels[0] not in value_of:
            raise ValueError(f"{where}: expected exactly one label of {names}, got {labels}")
        if value.get("format") != "rle" or not isinstance(value.get("rle"), list):
            raise ValueError(f"{where}: expected format 'rle' with a list of ints, got format {value.get('format')!r}")
        size = (result.get("original_height", height), result.get("original_width", width))
        if size != (height, width):
            raise ValueError(f"{where}: drawn on a {size[0]}x{size[1]} image, expected {height}x{width}")
        painted = decode_alpha(value["rle"], height, width, where) > ALPHA_THRESHOLD
        mask[painted] = value_of[labels[0]]
    return mask
