"""Thin DVC stage entry points: read params and paths, call the library, write results atomically.

``STAGES`` is the table of stage modules, in pipeline order: `madseg run STAGE` (the command line) and the demo's
runner (which preloads them) both read it here.
"""

STAGES = (
    "make_world",
    "crawl_index",
    "attributes",
    "embed",
    "pretrain",
    "infer",
    "mine",
    "export_weak_tasks",
    "import_scores",
    "select_S",
    "build_T",
    "export_pixel_tasks",
    "import_masks",
    "slices",
    "evaluate",
    "finetune",
    "summarize",
    "export",
    "validity",
    "report",
)
