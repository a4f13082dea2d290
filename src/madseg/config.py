"""Typed sections of params.yaml.

Each section is a frozen dataclass; :func:`parse_section` turns a mapping into one, recursing into nested
dataclasses and refusing unknown or missing keys with a message naming the section. Stage entry points call
:func:`load_params` once and pass the typed sections on; library code never reads params.yaml itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml

from madseg.labels import ClassList, make_class_list
from madseg.stops import ConfigError

if TYPE_CHECKING:  # params never import torch: a process that only reads them (a world renderer) starts 2.6 s sooner
    from madseg.models.input_policy import InputPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class Bounds:
    """The valid range of a number param, checked as params are read: ``Annotated[int, Bounds(1)]``."""

    low: float
    high: float | None = None
    low_open: bool = False  # low itself is out of range (a learning rate of 0)

    def check(self, value: float, where: str) -> None:
        below = value <= self.low if self.low_open else value < self.low
        if below or (self.high is not None and value > self.high):
            raise ConfigError(f"{where}: {value!r} is out of range — {self.describe()}")

    def describe(self) -> str:
        if self.high is None:
            return f"write a number above {self.low:g}" if self.low_open else f"write {self.low:g} or more"
        if self.low_open:
            return f"write a number above {self.low:g} and at most {self.high:g}"
        return f"write a number from {self.low:g} to {self.high:g}"


Count = Annotated[int, Bounds(1)]  # a number of things, steps or workers: at least one
Natural = Annotated[int, Bounds(0)]  # a seed, or a count where 0 means none
Positive = Annotated[float, Bounds(0, low_open=True)]  # a learning rate, a timeout, a power
NonNegative = Annotated[float, Bounds(0)]  # a weight decay, a noise level, a weight
Share = Annotated[float, Bounds(0, 1)]  # a probability or a part of a whole


def parse_section(cls: type[T], data: Any, where: str = "", problems: list[str] | None = None) -> T:
    """Build dataclass ``cls`` from mapping ``data``; ``where`` is the section's dotted key in messages.

    Every problem is reported, not just the first: each is one ``key.path: what is wrong — what to do`` line,
    appended to ``problems`` when given (the caller raises), else raised at once as one ConfigError.
    """
    collected: list[str] = [] if problems is None else problems
    before = len(collected)
    try:
        return _parse(cls, data, where, collected)
    except _Unbuildable:
        pass
    if problems is None:
        raise ConfigError("\n".join(collected[before:]))
    raise _Unbuildable


class _Unbuildable(Exception):
    """A section with a broken required key cannot be built; its problems are already collected."""


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _parse(cls: type[T], data: Any, where: str, problems: list[str]) -> T:
    if not isinstance(data, dict):
        problems.append(f"{where or 'params'}: expected a mapping of keys, got {data!r} — indent its keys under it")
        raise _Unbuildable
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in sorted(set(data) - set(fields), key=str):
        close = difflib.get_close_matches(str(name), fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(fields))}"
        problems.append(f"{_key(where, str(name))}: unknown key — {hint}")
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs, broken = {}, False
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                problems.append(f"{_key(where, name)}: missing — add it (the demo's params.yaml shows one)")
                broken = True
            continue
        try:
            kwargs[name] = _coerce(hints[name], data[name], _key(where, name), problems)
        except ConfigError as e:
            default = None if required or f.default is dataclasses.MISSING else f.default
            problems.append(f"{e} (default: {default!r})" if isinstance(default, int | float | str) else str(e))
            broken |= required
        except _Unbuildable:
            broken |= required
    if broken:
        raise _Unbuildable
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str, problems: list[str]) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        kind, *marks = typing.get_args(hint)
        value = _coerce(kind, value, where, problems)
        for mark in marks:
            mark.check(value, where)
        return value
    if dataclasses.is_dataclass(hint):
        return _parse(hint, value, where, problems)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        if len(forms := [arg for arg in args if arg is not type(None)]) == 1:  # an optional value: its one form
            return _coerce(forms[0], value, where, problems)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, [])
            except (ConfigError, _Unbuildable) as e:
                errors.append(str(e).partition(": ")[2] or "malformed")
        raise ConfigError(f"{where}: {value!r} fits none of its forms ({'; '.join(errors)})")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r} — write [a, b, c]")
        (arg, *_) = typing.get_args(hint) or (Any,)
        return tuple(_coerce(arg, v, f"{where}[{i}]", problems) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r} — write {{key: value}}")
        key_t, val_t = typing.get_args(hint) or (Any, Any)
        return {
            _coerce(key_t, k, where, problems): _coerce(val_t, v, f"{where}.{k}", problems) for k, v in value.items()
        }
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f"did you mean {close[0]!r}?" if close else "pick one"
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))} — {hint_text}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # round keys like 0 written without quotes
    if isinstance(hint, type) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        kind = {int: "a whole number", float: "a number", bool: "true or false", str: "a text"}.get(hint, hint.__name__)
        raise ConfigError(f"{where}: {value!r} is not {kind} — write {kind}")
    return value


# ----------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DatasetParams:
    """The labelled data S0/T0 in VOC layout and its class list."""

    classes: str | list[str] = "demo"
    palette: list[list[int]] | None = None
    voc_root: str = "data/world/voc"
    train_split: str = "train"
    val_split: str = "val"

    def class_list(self) -> ClassList:
        return make_class_list(self.classes, self.palette)


@dataclass(frozen=True)
class PhotoWorldParams:
    """The photo world's sources and how they split (see madseg.world.photos); read only when world.kind is photos.

    ``sources``: the folder `madseg photos fetch` writes (objects/<class>/, backgrounds/; never committed).
    ``shares``: of each class's cut-out instances and of the background photos, for train / val / pool (the pool
    and D_eval share the pool's part, which training never sees).
    ``folders``: the objects/ folders a class of dataset.classes is made of, where not just its own name (e.g.
    ``animal: [bird, mammal]``).
    """

    sources: str = "data/photo_sources"
    shares: list[Share] = (0.6, 0.15, 0.25)  # type: ignore[assignment]
    folders: dict[str, list[str]] = field(default_factory=dict)

    def folders_of(self, classes: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The objects/ folders of each class of ``classes`` but the first (background), in order."""
        return tuple(tuple(self.folders.get(name, [name])) for name in classes[1:])


@dataclass(frozen=True)
class WorldParams:
    """The embedded demo world (see madseg.world): procedural shapes (``kind: shapes``, the default) or real-photo
    cut-outs on real scene photos (``kind: photos``, classes from dataset.classes; presets/photos.yaml)."""

    seed: Natural = 0
    image_size: Count = 64
    n_train: Count = 1500
    n_val: Count = 300
    n_pool: Count = 4000
    n_eval_pool: Natural = 2000
    corner_share: Share = 0.32
    ood_share: Share = 0.06
    max_factors: Natural = 2
    near_duplicates: Natural = 30  # re-encoded/resized/cropped copies of pool images planted in the pool folder
    benchmark_leaks: Natural = 15  # copies of S0/T0 images planted in the pool folder (crawl must exclude them)
    out_dir: str = "data/world"
    kind: Literal["shapes", "photos"] = "shapes"
    photos: PhotoWorldParams = field(default_factory=PhotoWorldParams)


@dataclass(frozen=True)
class CrawlParams:
    """crawl_index: local folders (recursive) and/or a file of URLs (one a line) -> data/index (see madseg.crawl).

    ``timeout_s`` bounds connect and each read (a whole body: 3x); ``retries`` applies to timeouts, connection
    errors, 429 and 5xx, with ``backoff_s * 2**attempt`` between tries. ``workers`` download threads,
    ``decode_workers`` decoding processes. ``near_dup_threshold``: Hamming bits of the 64-bit pHash;
    ``near_dup_max_color_diff``: mean abs difference (0..255) of the 8x8 colour layouts that confirms it.
    """

    folders: list[str] = field(default_factory=list)
    url_list: str | None = None
    store_dir: str = "data/crawl_store"
    reference_sets: list[str] = field(default_factory=list)
    min_side: Count = 32
    max_side: Count = 8192
    max_pixels: Count = 40_000_000
    max_bytes: Count = 30_000_000
    timeout_s: Positive = 10.0
    retries: Natural = 2
    backoff_s: NonNegative = 0.5
    workers: Count = 8
    decode_workers: Count = 2
    max_redirects: Natural = 5
    near_dup_threshold: Natural = 12
    near_dup_max_color_diff: NonNegative = 5.0


@dataclass(frozen=True)
class ModelSpec:
    """One model: a registered architecture to build/train, or a user-supplied artefact.

    ``source`` is ``registry`` (build ``arch`` and train it in the demo's pretrain stage, or load ``path`` if
    given), ``checkpoint`` (a madseg checkpoint at ``path``), ``torchscript``, ``onnx`` or ``predictions``
    (a folder of palette-PNG masks named by image id).
    """

    name: str = ""  # filled from the key under models.competitors
    arch: str = ""
    source: Literal["registry", "checkpoint", "torchscript", "onnx", "predictions"] = "registry"
    path: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    class_map: dict[str, str] | None = None  # its class name -> target class name; unmapped -> ignore
    steps: Count | None = None  # pretraining steps for this model (demo), overriding pretrain.steps
    lr: Positive | None = None  # its pretraining peak learning rate, overriding pretrain.lr
    input_size: Count | None = None  # its input side, overriding models.input_size (e.g. a stride-16 design)
    classes: list[str] | None = None  # its own class list when it differs from the dataset's
    # pretraining augmentation beyond flips (madseg.training.AUGMENTATIONS): photometric = colour and contrast,
    # scale = scale jitter (0.67-1.5x, cropped or padded back)
    augment: Literal["photometric", "scale"] | None = None
    # test-time augmentation: hflip = logits averaged over each image and its mirror image at every prediction
    # (pool, T0, D_eval), training unchanged, twice the inference; kept in the target's checkpoints and a
    # competitor's spec.json, so every source but precomputed maps takes it
    tta: Literal["hflip"] | None = None


@dataclass(frozen=True)
class InputPolicyParams:
    """How images of any size reach the networks (see madseg.models.input_policy); ``models.input_size`` is the
    square of ``resize`` and the training crop of the other policies."""

    kind: Literal["resize", "shorter_side", "tiles"] = "resize"
    shorter_side: Count = 512
    max_side: Count = 1024
    tile: Count = 512
    overlap: float = 0.25
    pad_to: Count = 32

    def policy(self, input_size: int) -> InputPolicy:
        from madseg.models.input_policy import InputPolicy

        return InputPolicy(size=(input_size, input_size), **self.overrides())

    def overrides(self) -> dict[str, Any]:
        """What every model predicts with, over what its checkpoint recorded (see InputPolicy.overridden)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelsParams:
    input_size: Count = 64
    mean: list[float] = (0.485, 0.456, 0.406)  # type: ignore[assignment]
    std: list[Positive] = (0.229, 0.224, 0.225)  # type: ignore[assignment]
    input_policy: InputPolicyParams = field(default_factory=InputPolicyParams)
    target: ModelSpec = field(default_factory=lambda: ModelSpec(name="target", arch="smp.DeepLabV3Plus"))
    competitors: dict[str, ModelSpec] = field(default_factory=dict)  # key = the model's name


@dataclass(frozen=True)
class PretrainParams:
    steps: Count = 400  # default optimiser steps per model (a fixed count, so training is reproducible)
    batch_size: Count = 16
    lr: Positive = 2e-3
    weight_decay: NonNegative = 1e-4
    threads: Count = 1


@dataclass(frozen=True)
class InferParams:
    backend: Literal["local", "ray"] = "local"
    batch_size: Count = 64
    workers: Natural = 1
    shard_size: Count = 1024
    threads: Count = 2


@dataclass(frozen=True)
class RayParams:
    """Where the Ray backends run (``infer.backend`` / ``mining.backend: ray``)."""

    address: str | None = None  # host:port, ray://host:port or auto; null: $RAY_ADDRESS, else a Ray for the stage
    connect_timeout_s: Positive = 5.0
    actors: Natural = 0  # predicting actors; 0: one per GPU (device allowing), else the cluster's CPUs // infer.threads
    cpus_per_actor: Positive = 1.0


@dataclass(frozen=True)
class MiningParams:
    strategy: Literal["mad", "entropy", "random"] = "mad"
    backend: Literal["local", "ray"] = "local"
    n3: Count = 20
    distance: Literal["miou", "pixel_accuracy"] = "miou"
    # what ranks each MAD group: pair = the distance to the group's competitor (the paper's); committee = the
    # mean distance to all competitors, so that one competitor's own failures rank lower (madseg.mining.mad)
    rank_by: Literal["pair", "committee"] = "pair"
    area_quantiles: list[Share] = (0.25, 0.75)  # type: ignore[assignment]
    area_overrides: dict[str, list[Share]] = field(default_factory=dict)
    seed: Natural = 0
    overlay_min_side: Count = 192  # overlays upscale small images (maps nearest-neighbour) to at least this side
    exclude_trained_on: bool = False  # keep S^(1..i) out of M^(i+1) (the paper keeps them out of T only)
    # views of the target that compete with it, as competitors self_<view>, recomputed every round (beyond the
    # paper: failures every model shares; see madseg.models.views); [] = the paper's MAD
    self_consistency: list[str] = ()  # type: ignore[assignment]


@dataclass(frozen=True)
class SimulatedAnnotators:
    thresholds: list[Share] = (0.3, 0.5, 0.7, 0.85)  # type: ignore[assignment]
    bias: list[float] = (0.0, 0.25, -0.25)  # type: ignore[assignment]
    noise_sd: NonNegative = 0.5
    ood_veto_prob: Share = 0.8
    false_veto_rate: Share = 0.01
    seed: Natural = 0
    # the pool's truth (masks/<image id>.png, factors.csv): the demo world's, or your own fully labelled pool for a
    # dry run of the method before paying annotators
    truth_dir: str | None = "data/world/pool_truth"


@dataclass(frozen=True)
class LabelStudioParams:
    """A real Label Studio server: URL + token from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY or ``env_file``.

    ``document_root``: the folder the server serves local files from (task images must lie below it);
    ``data_dir``/``port``: where `make labelstudio` keeps the server's database and which port it asks for.
    """

    env_file: str = ".env"
    project_prefix: str = "madseg"
    batch_size: Count = 500
    document_root: str = "."
    data_dir: str = ".labelstudio"
    port: Annotated[int, Bounds(1, 65535)] = 8080
    users: list[str] = ()  # type: ignore[assignment]  # annotators' emails: `make labelstudio` creates their accounts
    users_file: str | None = None  # a text file of more emails, one a line (# comments): accounts made the same way


@dataclass(frozen=True)
class AnnotationParams:
    backend: Literal["simulated", "labelstudio"] = "simulated"
    annotators_per_task: Count = 3
    simulated: SimulatedAnnotators = field(default_factory=SimulatedAnnotators)
    labelstudio: LabelStudioParams = field(default_factory=LabelStudioParams)


@dataclass(frozen=True)
class SelectionParams:
    n4: Count = 100
    # S from the mean score or from the rater model's quality; the n4 lowest, or MAD's groups in turn
    scores: Literal["mean", "rater_model"] = "rater_model"  # the validity study's winner; mean = the paper's
    method: Literal["lowest", "round_robin"] = "lowest"
    pool_factor: Positive = 2.0  # round_robin picks among the pool_factor * n4 lowest-scored images
    t_size: Count = 40
    t_cap: Count = 8
    seed: Natural = 0


@dataclass(frozen=True)
class FinetuneParams:
    lr_grid: list[Positive] = (3e-3, 1e-2)  # type: ignore[assignment]
    epochs: Count = 3
    batch_size: Count = 8
    replay_ratio: Share = 0.875
    poly_power: NonNegative = 0.9
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd: the paper's (with momentum); adamw: as the pretraining's
    momentum: Share = 0.9
    weight_decay: NonNegative = 5e-4
    freeze_bn: bool = True  # keep pretrained batch-norm statistics (small mixed batches would shift them)
    # beyond the flips, on every fine-tuning batch (S and replay alike, whatever the strategy): photometric =
    # contrast scaling, channel permutation, greyscale (madseg.training.photometric); null = the paper's recipe
    augment: Literal["photometric"] | None = None
    # the fine-tuned weights' share in the result, the rest f_t^(i)'s (weight-space ensembling, WiSE-FT: Wortsman
    # et al., CVPR 2022): 1.0 = the paper's recipe; 0.5 keeps more of what T0 was good at (docs/photo_world.md)
    weight_average: Annotated[float, Bounds(0, 1, low_open=True)] = 1.0
    seed: Natural = 0
    threads: Count = 1  # torch threads per candidate (the weights depend on it)
    workers: Count = 2  # grid candidates trained side by side, one process each


@dataclass(frozen=True)
class EvaluationParams:
    bootstrap: Count = 1000  # resamples of T's images for the 95 % interval
    seed: Natural = 0
    k_min: Count = 20  # Appendix C: rank models on the first k images of T, k = k_min..|T|
    stability_threshold: Share = 0.9  # report the smallest k from which SRCC stays at or above this
    # D_eval, the held-out pool every hidden-truth figure is measured on (images/, truth/): read by validity only
    eval_pool: str | None = "data/world/eval_pool"


@dataclass(frozen=True)
class EmbedParams:
    """The pool's ImageNet features for the slices (madseg.embedding); same bytes on either backend."""

    model: Literal["mobilenet_v2"] = "mobilenet_v2"  # madseg.models.embedders.EMBEDDERS
    image_size: Count = 224  # every image squashed to this square (the whole frame; small images upsampled)
    backend: Literal["local", "ray"] = "local"
    batch_size: Count = 64
    workers: Natural = 1  # local backend: DataLoader processes decoding images
    shard_size: Count = 1024
    threads: Count = 2  # torch threads of the embedding process (each Ray actor too)


@dataclass(frozen=True)
class SlicesParams:
    # k of the k-means that groups the pool into kinds of image (madseg.slices.find_slices)
    clusters: Count = 12
    seed: Natural = 0
    # the pool's embeddings (embed stage) beside the attributes in the clustering: this many principal
    # components, scaled to this share of the attributes' total variance (0: attributes only; the default, since
    # ImageNet features follow what images show more than how they are degraded: docs/study.md "Failure slices")
    embedding_dims: Natural = 32
    embedding_weight: NonNegative = 0.0

    @property
    def uses_embeddings(self) -> bool:
        """Whether the slices cluster on the embeddings at all: only then does the embed stage compute them."""
        return self.embedding_weight > 0 and self.embedding_dims > 0


@dataclass(frozen=True)
class RoundSpec:
    prev: str = "init"  # the previous round's key; 'init' names the state before round 0
    next: str = ""  # finetunes only: the round whose target this fine-tune produces
    finetune: bool = False  # rounds only: does this round select S and fine-tune (every round but the last)


@dataclass(frozen=True)
class Params:
    seed: Natural
    dataset: DatasetParams
    crawl: CrawlParams
    models: ModelsParams
    pretrain: PretrainParams
    infer: InferParams
    mining: MiningParams
    annotation: AnnotationParams
    selection: SelectionParams
    finetune: FinetuneParams
    evaluation: EvaluationParams
    rounds: dict[str, RoundSpec]
    finetunes: dict[str, RoundSpec]
    final_round: str
    device: str = "auto"  # auto | cpu | cuda | cuda:N, for pretraining, fine-tuning and inference
    ray: RayParams = field(default_factory=RayParams)
    slices: SlicesParams = field(default_factory=SlicesParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    world: WorldParams = field(default_factory=WorldParams)  # the demo world only; a campaign has none


def load_params(path: str | Path = "params.yaml", *, overlay: str | Path | None = None) -> Params:
    """Read and validate params.yaml: its shape, types and the rules between keys that need no files.

    ``overlay`` names a preset (a YAML file of only the keys it changes, e.g. presets/pretrained.yaml) merged in
    key by key before validation.

    Raises ConfigError listing every problem, one ``key.path: what is wrong — what to do`` a line. What needs the
    files (archs, paths, checkpoints, image sizes) is checked by :func:`madseg.checks.check_params`.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file — run `madseg init` (your data) or `madseg init --demo`")
    raw = _read_yaml(path)
    if overlay is not None:
        raw = merge_overlay(raw, _read_yaml(Path(overlay)))
    problems: list[str] = []
    try:
        params = _parse(Params, raw, "", problems)
    except _Unbuildable:
        params = None
    if params is not None:
        params = _name_models(params, problems)
        for check in (_check_device, _check_classes, _check_rounds, _check_test_set, _check_views, _check_tta):
            check(params, problems)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}\n  " + "\n  ".join(problems))
    return params


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def merge_overlay(base: dict, overlay: dict) -> dict:
    """Merge ``overlay`` into ``base`` in place (its comments stay), mappings key by key, anything else replaced:
    how a preset applies. A null removes that entry (a competitor, a model's keyword): parameters that may be null
    default to null. Returns ``base``."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_overlay(base[key], value)
        elif value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def _check_device(params: Params, problems: list[str]) -> None:
    from madseg.device import resolve_device

    try:
        resolve_device(params.device)
    except ValueError as e:
        problems.append(f"device: {e}")


def _check_classes(params: Params, problems: list[str]) -> None:
    try:
        params.dataset.class_list()
    except ValueError as e:
        problems.append(f"dataset.classes: {e}")
    folders = params.world.photos.folders
    if unknown := sorted(set(folders) - set(params.dataset.classes[1:])):
        problems.append(f"world.photos.folders: {unknown} not among dataset.classes' foreground classes")
    taken = [f for names in params.world.photos.folders_of(params.dataset.classes) for f in names]
    if twice := sorted({f for f in taken if taken.count(f) > 1}):
        problems.append(f"world.photos.folders: the folders {twice} are given to more than one class")


def check_test_set_feasible(num_foreground: int, t_size: int, t_cap: int) -> None:
    """Raise ValueError if ``num_foreground`` classes x ``t_cap`` cannot fill a test set of ``t_size``."""
    if t_size <= 0 or t_cap <= 0:
        raise ValueError(f"t_size and t_cap must be positive, got {t_size} and {t_cap}")
    if num_foreground * t_cap < t_size:
        raise ValueError(
            f"a test set of {t_size} images cannot be filled with at most {t_cap} images per main class "
            f"and {num_foreground} foreground classes ({num_foreground * t_cap} < {t_size}) — "
            f"raise t_cap to {-(-t_size // max(num_foreground, 1))} or lower t_size to {num_foreground * t_cap}"
        )


def _check_test_set(params: Params, problems: list[str]) -> None:
    # a T that cannot be filled must fail before anything runs, not after a round of labelling
    try:
        classes = params.dataset.class_list()
    except ValueError:
        return  # reported as dataset.classes
    try:
        check_test_set_feasible(classes.num_classes - 1, params.selection.t_size, params.selection.t_cap)
    except ValueError as e:
        problems.append(f"selection.t_cap: {e}")


def _check_views(params: Params, problems: list[str]) -> None:
    from madseg.models.views import PREFIX, check_views

    try:
        check_views(params.mining.self_consistency)
    except ValueError as e:
        problems.append(f"mining.self_consistency: {e}")
    for key in params.models.competitors:
        if key.startswith(PREFIX):
            problems.append(
                f"models.competitors.{key}: names starting with {PREFIX!r} are the target's views — rename it"
            )


def _check_tta(params: Params, problems: list[str]) -> None:
    if params.models.target.tta is not None and params.models.target.tta in params.mining.self_consistency:
        problems.append(
            f"mining.self_consistency: the target averages over its {params.models.target.tta} view "
            "(models.target.tta), so that view always agrees with it — drop one of the two"
        )
    for key, spec in params.models.competitors.items():
        if spec.tta is not None and spec.source == "predictions":
            problems.append(
                f"models.competitors.{key}.tta: its maps are precomputed, so no augmentation can reach them — drop it"
            )


def _name_models(params: Params, problems: list[str]) -> Params:
    """Competitors take their key as name; a target written without one is called ``target``."""
    named = {}
    for key, spec in params.models.competitors.items():
        if spec.name and spec.name != key:
            problems.append(f"models.competitors.{key}.name: {spec.name!r} differs from its key — drop the name")
        if key == (params.models.target.name or "target"):
            problems.append(f"models.competitors.{key}: a competitor cannot share the target's name — rename it")
        named[key] = dataclasses.replace(spec, name=key)
    target = dataclasses.replace(params.models.target, name=params.models.target.name or "target")
    models = dataclasses.replace(params.models, target=target, competitors=named)
    return dataclasses.replace(params, models=models)


def _check_rounds(params: Params, problems: list[str]) -> None:
    keys = list(params.rounds)
    if keys != [str(i) for i in range(len(keys))] or not keys:
        problems.append(
            f"rounds: keys must be '0', '1', ... in order, got {keys} — `madseg init --rounds N` writes them"
        )
        return
    for i, key in enumerate(keys):
        want = str(i - 1) if i else "init"
        if params.rounds[key].prev != want:
            problems.append(f"rounds.{key}.prev: must be {want!r}, got {params.rounds[key].prev!r}")
        if params.rounds[key].finetune != (i < len(keys) - 1):
            problems.append(
                f"rounds.{key}.finetune: must be {i < len(keys) - 1} (only the last round does not fine-tune)"
            )
    if params.final_round != keys[-1]:
        problems.append(f"final_round: must name the last round ({keys[-1]!r}), got {params.final_round!r}")
    want_ft = keys[:-1]
    if list(params.finetunes) != want_ft:
        problems.append(f"finetunes: must hold every round but the last ({want_ft}), got {list(params.finetunes)}")
        return
    for key, spec in params.finetunes.items():
        if spec.prev != params.rounds[key].prev or spec.next != str(int(key) + 1):
            problems.append(
                f"finetunes.{key}: must read {{prev: {params.rounds[key].prev!r}, next: {str(int(key) + 1)!r}}}, "
                f"got {{prev: {spec.prev!r}, next: {spec.next!r}}}"
            )


def rounds_params(finetunes: int) -> dict[str, Any]:
    """The ``rounds``, ``final_round`` and ``finetunes`` keys of ``finetunes`` fine-tuning rounds (the paper's r):
    rounds 0..r, every one but the last fine-tuning, as params.yaml writes them."""
    if finetunes < 0:
        raise ConfigError(f"rounds: {finetunes} fine-tuning rounds — give 0 or more (the paper: 2)")
    keys = [str(i) for i in range(finetunes + 1)]
    rounds = {k: {"prev": str(i - 1) if i else "init", "finetune": i < finetunes} for i, k in enumerate(keys)}
    ft = {k: {"prev": rounds[k]["prev"], "next": str(i + 1)} for i, k in enumerate(keys[:-1])}
    return {"rounds": rounds, "final_round": keys[-1], "finetunes": ft}
