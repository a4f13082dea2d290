"""The embedded demo world: a procedural, deterministic scene generator in PASCAL VOC layout.

Benchmark images (S0, T0) show 1-3 upright objects of six classes, each with its own shape, colour family
and texture. The pool D mixes such images with corner cases (1..max_factors of :data:`FACTORS`) and
out-of-domain scenes that contain none of the classes. The truth of D is written apart from D.
"""

from madseg.world.scenes import FACTORS, Scene, render_scene, sample_scene

__all__ = ["FACTORS", "Scene", "render_scene", "sample_scene"]
