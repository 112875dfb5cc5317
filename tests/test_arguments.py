"""YAML recipes → dataclasses: the YAML gives values, flags override them, unknown keys fail by name."""

from pathlib import Path

import pytest
import yaml

from pipeline.arguments import ConfigError, parse_args, resolved_config

RECIPES = sorted((Path(__file__).parents[1] / "recipes" / "configs").glob("*.yaml"))


def write_recipe(tmp_path: Path, **values) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def base_recipe(tmp_path: Path, **extra) -> Path:
    return write_recipe(
        tmp_path,
        model_type="vit",
        dataset_name_or_path="data",
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        learning_rate=3.0e-4,
        **extra,
    )


def test_yaml_values_reach_all_three_dataclasses(tmp_path):
    recipe = base_recipe(tmp_path, config_overrides={"hidden_size": 32}, crop_scale_min=0.5, loss_pos_weight="auto")
    model, data, training = parse_args(["--config", str(recipe)])
    assert model.model_type == "vit" and model.config_overrides == {"hidden_size": 32}
    assert data.dataset_name_or_path == "data" and data.crop_scale_min == 0.5
    assert training.learning_rate == 3.0e-4 and training.loss_pos_weight == "auto"


def test_command_line_overrides_yaml(tmp_path):
    recipe = base_recipe(tmp_path)
    _, data, training = parse_args(
        ["--config", str(recipe), "--learning_rate", "0.01", "--dataset_name_or_path", "other"]
    )
    assert training.learning_rate == 0.01
    assert data.dataset_name_or_path == "other"


def test_yaml_scientific_notation_is_a_number(tmp_path):
    # PyYAML reads `1e-4` (no dot) as a string; argparse must still convert it.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_type: vit\ndataset_name_or_path: d\noutput_dir: {tmp_path}/o\nlearning_rate: 1e-4\n")
    _, _, training = parse_args(["--config", str(recipe)])
    assert training.learning_rate == pytest.approx(1e-4)


def test_unknown_yaml_key_is_named(tmp_path):
    recipe = base_recipe(tmp_path, learning_rat=0.1)
    with pytest.raises(ConfigError, match="learning_rat"):
        parse_args(["--config", str(recipe)])


def test_unknown_flag_is_named(tmp_path):
    with pytest.raises(ConfigError, match="--no_such_flag"):
        parse_args(["--config", str(base_recipe(tmp_path)), "--no_such_flag", "1"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_args(["--config", str(tmp_path / "nope.yaml")])


def test_defaults_for_multilabel_training(tmp_path):
    _, _, training = parse_args(["--config", str(base_recipe(tmp_path))])
    assert training.metric_for_best_model == "auroc_mean"
    assert training.load_best_model_at_end and training.greater_is_better
    assert training.remove_unused_columns is False
    assert training.bf16 is False  # use_cpu: no bf16 even where a GPU exists
    assert training.dataloader_persistent_workers == (training.dataloader_num_workers > 0)


def test_bad_pos_weight_value(tmp_path):
    with pytest.raises(ConfigError, match="loss_pos_weight"):
        parse_args(["--config", str(base_recipe(tmp_path, loss_pos_weight="balanced"))])


def test_resolved_config_has_three_sections_and_no_token(tmp_path):
    model, data, training = parse_args(["--config", str(base_recipe(tmp_path)), "--hub_token", "secret"])
    config = resolved_config(model, data, training)
    assert set(config) == {"model", "data", "training"}
    assert "secret" not in yaml.safe_dump(config)
    assert config["data"]["dataset_name_or_path"] == "data"


@pytest.mark.parametrize("key", ["pretrained", "load_best_model_at_end"])
def test_false_in_a_recipe_turns_off_a_setting_that_defaults_to_true(key, tmp_path):
    recipe = write_recipe(tmp_path, timm_architecture="densenet121", dataset_name_or_path="data", **{key: False})
    parsed = parse_args(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert [getattr(group, key) for group in parsed if hasattr(group, key)] == [False]
    parsed = parse_args(["--config", str(recipe), "--output_dir", str(tmp_path / "out"), f"--{key}", "true"])
    assert [getattr(group, key) for group in parsed if hasattr(group, key)] == [True]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_parses(recipe, tmp_path):
    model, data, _ = parse_args(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert data.dataset_name_or_path
    assert model.model_name_or_path or model.model_type or model.timm_architecture
    assert model.pretrained == ("scratch" not in recipe.stem and recipe.stem not in ("cnn_paper", "demo"))


def test_plateau_scheduler_watches_auroc_rising(tmp_path):
    recipe = Path(__file__).parents[1] / "recipes" / "configs" / "vit_v2_32_scratch.yaml"
    _, _, training = parse_args(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert training.lr_scheduler_kwargs["mode"] == "max"
    _, _, training = parse_args(
        ["--config", str(recipe), "--output_dir", str(tmp_path), "--lr_scheduler_kwargs", '{"mode": "min"}']
    )
    assert training.lr_scheduler_kwargs["mode"] == "min"  # an explicit choice wins


def test_push_to_hub_needs_a_repo_id(tmp_path):
    with pytest.raises(ConfigError, match="hub_model_id"):
        parse_args(["--config", str(base_recipe(tmp_path)), "--push_to_hub", "true"])


def test_losses_are_not_averaged_like_tokens(tmp_path):
    _, _, training = parse_args(["--config", str(base_recipe(tmp_path))])
    assert training.average_tokens_across_devices is False


def test_no_pinned_memory_without_a_gpu(tmp_path):
    _, _, training = parse_args(["--config", str(base_recipe(tmp_path))])
    assert training.dataloader_pin_memory is False  # use_cpu: pinning would only warn
