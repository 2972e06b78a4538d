"""Content keys: what the data and model are, not where they lie; settings that differ from their defaults."""

import dataclasses
import shutil

from tickets.config import TrainConfig, TrajectoryConfig

from conftest import GLUE_DIR


def _copy_sst2(root):
    shutil.copytree(GLUE_DIR / "SST-2", root / "SST-2")
    return root


def test_moving_the_data_folder_keeps_the_keys(tmp_path, tiny_recipe):
    first = _copy_sst2(tmp_path / "a")
    moved = _copy_sst2(tmp_path / "elsewhere" / "b")
    keys = [dataclasses.replace(tiny_recipe, data_dir=str(folder)).content_key(1) for folder in (first, moved)]
    assert keys[0] == keys[1] == tiny_recipe.content_key(1)


def test_changing_one_data_row_changes_the_keys(tmp_path, tiny_recipe):
    folder = _copy_sst2(tmp_path / "data")
    cfg = dataclasses.replace(tiny_recipe, data_dir=str(folder))
    before = cfg.content_key(), cfg.content_key(1)
    train = folder / "SST-2" / "train.tsv"
    lines = train.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace("\t1", "\t0") if "\t1" in lines[5] else lines[5].replace("\t0", "\t1")
    train.write_text("".join(lines))
    after = cfg.content_key(), cfg.content_key(1)
    assert before[0] != after[0] and before[1] != after[1]


def test_a_new_setting_with_a_default_keeps_existing_keys(tiny_recipe):
    Extended = dataclasses.make_dataclass("Extended", [("new_setting", int, dataclasses.field(default=3))],
                                          bases=(TrainConfig,), frozen=True)
    extended = dataclasses.replace(tiny_recipe, train=Extended(**dataclasses.asdict(tiny_recipe.train)))
    assert extended.content_key(1) == tiny_recipe.content_key(1)
    changed = dataclasses.replace(extended, train=dataclasses.replace(extended.train, new_setting=4))
    assert changed.content_key(1) != tiny_recipe.content_key(1)


def test_keys_follow_settings_seed_and_level_but_not_eval_every_or_levels(tiny_recipe):
    key = tiny_recipe.content_key(1)
    assert dataclasses.replace(tiny_recipe, levels=5).content_key(1) == key
    assert dataclasses.replace(tiny_recipe, train=dataclasses.replace(tiny_recipe.train, eval_every=3)).content_key(1) == key
    assert dataclasses.replace(tiny_recipe, seed=1).content_key(1) != key
    assert dataclasses.replace(tiny_recipe, rate=0.3).content_key(1) != key
    assert tiny_recipe.content_key(2) != key
    assert TrajectoryConfig(task="SST-2", data_dir=str(GLUE_DIR)).identity()["settings"] == \
        {"task": "sst2", "pooler_pretrained": False}
