"""A golden tiny run: any change to the code that changes results fails here until RESULTS_VERSION is bumped."""

import os

import pytest

from tickets import RESULTS_VERSION
from tickets.imp import level_dir
from tickets.masks import Mask

# The level-1 result of the tiny deterministic run (the session's `tiny_trajectory`: the tiny recipe, levels 0-2; how
# many levels run is no part of a level's result), as produced under RESULTS_VERSION "version".
GOLDEN = {"version": "2", "mask_hash": "f367592a1edae72b7d909f8e716dd918cdc7a3c44606221986c04213eb03a3c5",
          "accuracy": 0.53125, "eval_loss": 0.6983922719955444}


def test_tiny_run_gives_the_pinned_results_of_this_results_version(tiny_trajectory):
    out, results, _ = tiny_trajectory
    metrics = results[1].metrics["metrics"]
    got = {"version": RESULTS_VERSION,
           "mask_hash": Mask.load(os.path.join(level_dir(out, 1), "mask.safetensors")).content_hash(),
           "accuracy": metrics["accuracy"], "eval_loss": metrics["eval_loss"]}
    same = (got["version"] == GOLDEN["version"] and got["mask_hash"] == GOLDEN["mask_hash"]
            and got["accuracy"] == GOLDEN["accuracy"] and got["eval_loss"] == pytest.approx(GOLDEN["eval_loss"], rel=1e-6))
    assert same, (
        f"results of the golden tiny run changed: got {got}, pinned {GOLDEN}. If the change of results is intended, "
        "bump RESULTS_VERSION in tickets/__init__.py (so no stored result of the old code is reused) and pin the new "
        "values here; if it is not, the change altered results by mistake."
    )
