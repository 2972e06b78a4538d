"""`python -m tickets`: every subcommand has help, and `mask info` prints a mask's sparsity and metadata.

Bad input at this front door (one clear line, exit 2, no traceback) is in tests/test_bad_input.py."""

import pytest
import torch

from tickets.cli import main
from tickets.masks import Mask


@pytest.fixture(scope="module")
def foreign_mask(tmp_path_factory):
    path = tmp_path_factory.mktemp("masks") / "bert_base.safetensors"
    Mask({"encoder.layer.0.attention.self.query.weight": torch.ones(768, 768, dtype=torch.bool)},
         {"model_id": "bert-base-uncased", "level": "3", "source_task": "mnli"}).save(str(path))
    return str(path)


def test_mask_info_prints_sparsity_per_layer(foreign_mask, capsys):
    assert main(["mask", "info", foreign_mask]) == 0
    out = capsys.readouterr().out
    assert "sparsity: 0.0000 of 589,824 weights in 1 tensors" in out
    assert "source_task: mnli" in out


@pytest.mark.parametrize("args", [["--help"], ["imp", "--help"], ["branch", "--help"], ["mask", "info", "--help"]])
def test_every_subcommand_has_help(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
