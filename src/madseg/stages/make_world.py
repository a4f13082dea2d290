"""make_world: write the demo world (VOC S0/T0, the pool D, D's truth apart, D_eval) under world.out_dir."""

from __future__ import annotations

import logging

from madseg.config import Params
from madseg.world.files import write_world

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    counts = write_world(params.world, params.dataset.class_list())
    log.info("world written to %s: %s", params.world.out_dir, counts)
