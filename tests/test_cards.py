"""The model card rendered from a run folder: Hub metadata, model-index, sections and numbers from the run."""

from __future__ import annotations

import json

import pytest
import timm
import yaml
from huggingface_hub import ModelCard
from run_folder_factory import BASE_MODEL, DATASET_ID, UNDEFINED_FINDING, make_run_folder

from pipeline.arguments import ModelArguments
from pipeline.cards import NIH_URL, example_images, render_model_card
from pipeline.labels import FINDINGS
from pipeline.published import REFERENCE_RESULTS
from pipeline.run_folder import RunFolderError


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("vit") / "run", pretrained=True)


@pytest.fixture(scope="module")
def vit_card(vit_run):
    return render_model_card(vit_run, "org/chest-vit")


def test_metadata_round_trips_through_the_card_yaml(vit_run, vit_card):
    data = ModelCard(str(vit_card)).data  # what the Hub reads from README.md
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-classification"
    assert data.license == "apache-2.0"
    assert data.base_model == BASE_MODEL
    assert data.datasets == [DATASET_ID]
    assert {"medical-imaging", "chest-x-ray", "multi-label-classification", "nih-chestxray14"} <= set(data.tags)


def test_model_index_holds_the_official_test_results(vit_run, vit_card):
    expected = json.loads((vit_run / "test_results.json").read_text())
    results = {r.metric_name: r for r in ModelCard(str(vit_card)).data.eval_results}
    assert results["Mean AUROC"].metric_value == pytest.approx(expected["test_auroc_mean"], abs=1e-4)
    assert results["Element-wise accuracy"].metric_value == pytest.approx(expected["test_accuracy"], abs=1e-4)
    assert results["Macro F1"].metric_value == pytest.approx(expected["test_f1_macro"], abs=1e-4)
    for name in FINDINGS:
        if name == UNDEFINED_FINDING:
            assert f"AUROC {name}" not in results
        else:
            assert results[f"AUROC {name}"].metric_value == pytest.approx(expected[f"test_auroc_{name}"], abs=1e-4)
    assert {(r.dataset_split, r.task_type) for r in results.values()} == {("test", "image-classification")}


def test_results_table_shows_each_finding_and_its_threshold(vit_run, vit_card):
    metrics = json.loads((vit_run / "test_results.json").read_text())
    thresholds = json.loads((vit_run / "thresholds.json").read_text())
    for name in FINDINGS:
        auroc = "n/a" if name == UNDEFINED_FINDING else f"{metrics[f'test_auroc_{name}']:.3f}"
        assert f"| {name} | {auroc} | {thresholds[name]:.3f} |" in vit_card.text
    assert f"| This model | {metrics['test_auroc_mean']:.3f} |" in vit_card.text
    for reference in REFERENCE_RESULTS:
        assert f"| {reference.model} | {reference.mean_auroc:.3f} |" in vit_card.text


def test_hyperparameters_come_from_run_config(tmp_path):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    config["training"].update(learning_rate=0.000123, num_train_epochs=17, optim="sgd")
    (run / "run_config.yaml").write_text(yaml.safe_dump(config))
    text = render_model_card(run, "org/x").text
    assert "| Learning rate | `0.000123` |" in text
    assert "| Epochs | `17` |" in text
    assert "| Optimizer | `sgd` |" in text


def test_sections_attribution_and_citations(vit_card):
    text = vit_card.text
    for heading in (
        "## Intended use",
        "### Out-of-scope use",
        "## Training data",
        "## Preprocessing",
        "## Training hyperparameters",
        "## Results",
        "## How to use",
        "## Limitations",
        "## Citations",
    ):
        assert heading in text
    assert NIH_URL in text and "wang2017chestxray" in text and "arXiv:2406.00237" in text
    assert "not a medical device" in text
    assert "text-mined" in text.lower() and "AP" in text and "One hospital" in text


def test_widget_examples_point_at_uploaded_nih_images(vit_card):
    widget = vit_card.data.widget
    examples = example_images()
    assert [w["src"] for w in widget] == [
        f"https://huggingface.co/org/chest-vit/resolve/main/{e.repo_path}" for e in examples
    ]
    assert all(e.path.is_file() and e.path.name in e.title for e in examples)


def test_revision_goes_into_example_urls(vit_run):
    card = render_model_card(vit_run, "org/chest-vit", revision="v1")
    assert all("/resolve/v1/examples/" in w["src"] for w in card.data.widget)


def test_no_base_model_when_trained_from_scratch(tmp_path):
    card = render_model_card(make_run_folder(tmp_path / "run", pretrained=False, with_checkpoint=False), "org/x")
    assert "base_model" not in card.data.to_dict()
    assert "trained from scratch" in card.text


def _with_model_section(run, **model_args) -> None:
    """Rewrite the run's `model` section as training would write it for these ModelArguments."""
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    config["model"] = vars(ModelArguments(**model_args))
    (run / "run_config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("local", ["existing folder", "/models/vit", "./models/vit"])
def test_a_local_base_checkpoint_is_neither_metadata_nor_a_link(tmp_path, local):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    path = str(run) if local == "existing folder" else local
    _with_model_section(run, model_name_or_path=path, pretrained=True)
    card = render_model_card(run, "org/x")
    assert "base_model" not in ModelCard(str(card)).data.to_dict()
    assert "fine-tuned from a local checkpoint" in card.text
    assert path not in card.text and "huggingface.co//" not in card.text
    assert "trained from scratch" not in card.text


def test_a_pretrained_timm_architecture_names_timms_hub_copy(tmp_path):
    architecture = "resnet18.a1_in1k"
    expected = timm.create_model(architecture, pretrained=False).pretrained_cfg["hf_hub_id"]
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    _with_model_section(run, timm_architecture=architecture, pretrained=True)
    card = render_model_card(run, "org/x")
    assert ModelCard(str(card)).data.base_model == expected
    assert f"fine-tuned from [`{expected}`](https://huggingface.co/{expected})" in card.text
    assert "trained from scratch" not in card.text


def test_custom_code_card_says_the_widget_cannot_serve_it(tmp_path):
    run = make_run_folder(tmp_path / "run", model="paper_cnn", pretrained=False, with_checkpoint=False)
    card = render_model_card(run, "org/paper-cnn")
    assert "widget" not in card.data.to_dict()
    assert "custom_code" in card.data.tags
    assert "cannot serve" in card.text and "paper_cnn.py" in card.text
    assert card.text.count(", trust_remote_code=True)") == 3  # pipeline, processor and model snippets


def test_run_without_test_metrics_is_refused(tmp_path):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (run / "test_results.json").unlink()
    all_results = json.loads((run / "all_results.json").read_text())
    (run / "all_results.json").write_text(json.dumps({k: v for k, v in all_results.items() if "test_" not in k}))
    with pytest.raises(RunFolderError, match=r"all_results\.json.*test_auroc_mean"):
        render_model_card(run, "org/x")


@pytest.mark.parametrize(
    ("record", "described"),
    [
        ({"images": 12, "max_eval_samples": 12}, "12 of the 25,596 official test images, cut by max_eval_samples"),
        ({"images": 64}, "64 of the 25,596 official test images"),
    ],
)
def test_a_partial_test_split_is_named_and_kept_apart_from_published_results(tmp_path, record, described):
    run = make_run_folder(tmp_path / "run", with_checkpoint=False)
    (run / "test_split.json").write_text(json.dumps({**record, "official_images": 25_596}))
    card = render_model_card(run, "org/x")
    text = " ".join(card.text.split())
    assert f"On a **partial** NIH ChestX-ray14 test split ({described})" in text
    assert "not comparable" in text and "official NIH ChestX-ray14 test split" not in text
    assert "evaluated on the official `test_list.txt`" not in text
    assert "| This model |" not in text  # never a row among the published numbers
    mean = json.loads((run / "test_results.json").read_text())["test_auroc_mean"]
    assert f"This model is not in the table: its mean AUROC ({mean:.3f}) is on a partial test split" in text
    splits = {result.dataset_split for result in ModelCard(str(card)).data.eval_results}
    assert splits == {f"test (partial: {described})"}
