"""Where each stage reads and writes, relative to the project root. dvc.yaml spells the same paths.

Only stage entry points use this module; library functions take arrays and frames, not paths.
"""

from __future__ import annotations

from pathlib import Path

# the embedded demo world (make_world)
WORLD = Path("data/world")
POOL_IMAGES = WORLD / "pool" / "images"  # D, unlabelled: what crawl_index ingests in the demo

# crawl_index
INDEX = Path("data/index")
POOL_INDEX = INDEX / "pool.csv"
POOL_REJECTS = INDEX / "rejects.csv"

# models
MODELS = Path("models")
COMPETITORS = MODELS / "competitors"  # one folder per competitor: model.pt | model.ts | model.onnx | predictions/


def competitor_dir(name: str) -> Path:
    return COMPETITORS / name


def target_checkpoint(round_key: str) -> Path:
    """f_t^(i): round 0 is the pretrained target, round i+1 is written by finetune@i."""
    return MODELS / f"target_{round_key}.pt"


# predictions on the pool (sharded stores)
PREDICTIONS = Path("data/predictions")


def competitor_predictions(name: str) -> Path:
    return PREDICTIONS / "competitors" / name


def target_predictions(round_key: str) -> Path:
    return PREDICTIONS / "target" / round_key


def target_view_predictions(round_key: str, view: str) -> Path:
    """The target of round i seen through a view (madseg.models.views), inside its own store's folder."""
    return target_predictions(round_key) / "views" / view


# round-scoped artefacts
def mining_dir(round_key: str) -> Path:
    return Path("data/mining") / f"round_{round_key}"


POOL_ATTRIBUTES = Path("data/attributes/pool.csv")  # cheap per-image attributes of the pool (madseg.slices)
POOL_EMBEDDINGS = Path("data/embeddings/pool")  # ImageNet features of the pool (EmbeddingStore; madseg.embedding)
SLICES = Path("data/slices")


def slices_dir(round_key: str) -> Path:
    """Failure slices of round i's M (slices.csv), from attributes and ratings, never truth."""
    return SLICES / f"round_{round_key}"


def annotations_dir(round_key: str) -> Path:
    return Path("annotations") / f"round_{round_key}"


def finetune_dir(round_key: str) -> Path:
    return MODELS / f"finetune_{round_key}"


METRICS = Path("metrics")
# scripts/validity_study.py's records (outside CI: about an hour), folded in by the validity stage and the report;
# they belong to the world they were measured on
STUDY = METRICS / "study.json"
STUDY_OPTIONS = METRICS / "study_options.json"


def round_metrics(round_key: str) -> Path:
    return METRICS / "rounds" / f"round_{round_key}.json"


def finetune_metrics(round_key: str) -> Path:
    """The grid's T0 scores and f_t^(i)'s T0 before and f_t^(i+1)'s after fine-tune i."""
    return METRICS / "finetune" / f"round_{round_key}.json"


REPORT = METRICS / "report"
REPORT_INDEX = REPORT / "index.html"
EXPORT = MODELS / "export"  # the final target for use outside the project


def labelled_dir(round_key: str) -> Path:
    """S^(1..i+1) with its masks after finetune@i; 'init' is the empty set before round 0."""
    return Path("data/labelled") / f"round_{round_key}"
