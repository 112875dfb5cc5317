import csv
import re

import numpy as np
import pytest
from PIL import Image
from report_data import make_cohort, save_dataset, save_model, tiny_resnet, write_run
from run_folder_factory import tiny_model
from sklearn.metrics import f1_score, roc_auc_score

from pipeline import explain, figures
from pipeline.cli import main
from pipeline.labels import FINDINGS
from pipeline.metrics import compute_metrics
from pipeline.published import PAPER_RESULTS, REFERENCE_RESULTS
from pipeline.report import ReportError, markdown, numbers, reading
from pipeline.report import figures as report_figures
from pipeline.stats import expected_calibration_error

EFFUSION = FINDINGS.index("Effusion")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three runs with planted behaviour on one generated test split, and their report."""
    root = tmp_path_factory.mktemp("study")
    cohort = make_cohort(n_patients=150, images_per_patient=4, seed=0)
    dataset = save_dataset(root / "dataset", cohort)
    rng = np.random.default_rng(1)
    noise = rng.random(cohort.risk.shape)
    calibrated = cohort.risk.copy()
    calibrated[:, EFFUSION] = np.where(cohort.risk[:, EFFUSION] > 0.5, 0.99, 0.01)  # planted overconfidence
    female = np.array([s == "F" for s in cohort.sex])[:, None]
    probs = {
        "calibrated": calibrated,
        "random": noise,
        "gap": np.where(female, cohort.risk, noise),  # planted: informative for women only
    }
    results = {
        "calibrated": {"num_parameters": 5000, "train_runtime": 50.0, "train_samples_per_second": 5.0},
        "random": {"num_parameters": 1000, "train_runtime": 100.0, "train_samples_per_second": 20.0},
        "gap": {"num_parameters": 2000, "train_runtime": 300.0, "train_samples_per_second": 30.0},
    }
    runs = [write_run(root / name, cohort.image_ids, p, dataset, results=results[name]) for name, p in probs.items()]
    output = root / "report"
    argv = ["compare", *map(str, runs), "--output", str(output), "--bootstrap", "100", "--explain-images", "0"]
    assert main([*argv, "--pair", "gap:random"]) == 0
    return {
        "root": root,
        "cohort": cohort,
        "runs": runs,
        "output": output,
        "dataset": dataset,
        "text": (output / "report.md").read_text(),
        "probs": {r.name: _read_predictions(r) for r in runs},
    }


def _read_predictions(run_dir):
    """The probabilities exactly as the report reads them (as written, with six significant digits)."""
    with (run_dir / "test_predictions.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    return np.array([[float(v) for v in row[1:]] for row in rows])


def _rows(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the markdown table under `heading` as header → cell, bold markers kept."""
    section = text.split(f"## {heading}\n\n", 1)[1]
    lines = [line for line in section.split("\n\n", 1)[0].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return [dict(zip(header, row, strict=True)) for row in rows]


def _table(text: str, heading: str) -> dict[str, dict[str, str]]:
    """The table under `heading` keyed by its first column."""
    return {next(iter(row.values())): row for row in _rows(text, heading)}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def _plain(cell: str) -> str:
    return cell.replace("**", "")


def test_table_numbers_equal_scikit_learn(study):
    table = _table(study["text"], "Models on the test split")
    labels = study["cohort"].labels
    assert list(table) == ["calibrated", "random", "gap"]
    for model, probs in study["probs"].items():
        row = table[model]
        for j, name in enumerate(FINDINGS):
            assert _plain(row[name]) == f"{roc_auc_score(labels[:, j], probs[:, j]):.3f}"
        mean = np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in range(len(FINDINGS))])
        assert _plain(row["Mean AUROC [95% CI]"]).startswith(f"{mean:.3f} [")
        assert _plain(row["Micro AUROC"]) == f"{roc_auc_score(labels.ravel(), probs.ravel()):.3f}"
        assert _plain(row["Accuracy"]) == f"{np.mean((probs >= 0.5) == labels):.3f}"
        assert row["All-negative accuracy"] == f"{np.mean(labels == 0):.3f}"
        f1 = np.mean([f1_score(labels[:, j], probs[:, j] >= 0.5) for j in range(len(FINDINGS))])
        assert _plain(row["Macro F1"]) == f"{f1:.3f}"


def test_best_value_of_each_column_is_bold(study):
    table = _table(study["text"], "Models on the test split")
    bold = {column: [m for m in table if table[m][column].startswith("**")] for column in table["gap"]}
    assert bold["Mean AUROC [95% CI]"] == ["calibrated"]
    assert bold["Parameters"] == ["random"]  # fewest
    assert bold["Training time"] == ["calibrated"]  # shortest
    assert bold["Samples/s"] == ["gap"]
    assert bold["All-negative accuracy"] == []  # the same baseline for everyone


def test_mean_auroc_interval_contains_the_estimate(study):
    table = _table(study["text"], "Models on the test split")
    for row in table.values():
        estimate, low, high = map(float, re.findall(r"\d\.\d+", _plain(row["Mean AUROC [95% CI]"])))
        assert low < estimate < high


def test_paired_comparisons_against_the_reference_and_explicit_pairs(study):
    table = _table(study["text"], "Paired comparisons")
    assert list(table) == ["random − calibrated", "gap − calibrated", "gap − random"]
    row = table["random − calibrated"]
    estimate, low, high = map(float, re.findall(r"-?\d\.\d+", row["Δ mean AUROC [95% CI]"]))
    assert estimate < 0 and high < 0 and low < estimate
    # No resample of 100 favours random: the p-value is at the bootstrap's floor, 2/101, printed as a bound.
    assert row["p-value"] == "< 0.02"
    assert row["At the 5% level"] == "calibrated is better"
    assert "raise `--bootstrap` to tighten it" in study["text"]


def test_planted_subgroup_gap_is_called_out(study):
    section = study["text"].split("## Who the models work for", 1)[1].split("\n## ", 1)[0]
    rows = _rows(study["text"], "Who the models work for")
    assert "**gap** works better for sex F" in section
    assert "**calibrated** works better for sex" not in section
    groups = {(row["Attribute"], row["Group"]) for row in rows}
    assert {
        ("Sex", "F"),
        ("Sex", "M"),
        ("Age", "under 40"),
        ("Age", "40 to 60"),
        ("Age", "over 60"),
        ("View", "AP"),
        ("View", "PA"),
    } <= groups


def _test_split(labels: np.ndarray, patient_ids: np.ndarray, sex: list[str], age: list[float]) -> reading.TestSplit:
    n = len(labels)
    return reading.TestSplit(
        image_ids=[f"{i:08d}.png" for i in range(n)],
        labels=labels,
        patient_ids=patient_ids,
        sex=np.asarray(sex, dtype=object),
        age=np.asarray(age, dtype=float),
        view=np.full(n, "PA", dtype=object),
        names=list(FINDINGS),
        dataset=None,
    )


def test_small_groups_are_not_compared_and_means_share_their_findings():
    """Two young patients predicted perfectly (a zero-width interval), everyone else at random; and Hernia only
    ever negative for men."""
    rng = np.random.default_rng(5)
    patient_ids = np.repeat(np.arange(60), 2)
    labels = (rng.random((120, len(FINDINGS))) < 0.3).astype(float)
    male = patient_ids % 2 == 1
    hernia = FINDINGS.index("Hernia")
    labels[male, hernia] = 0
    young = patient_ids < 2
    probs = np.where(young[:, None], labels, rng.random(labels.shape))
    test = _test_split(labels, patient_ids, ["M" if m else "F" for m in male], [30 if y else 70 for y in young])
    subgroups = numbers.subgroup_intervals({"model": probs}, test, n_boot=50, seed=0)
    text = markdown.subgroup_section(subgroups, ["model"], test.names)
    row = next(line for line in text.splitlines() if line.startswith("| Age | under 40 |"))
    assert "too few patients" in row and "works better" not in text
    assert subgroups.sizes["Age", "under 40"] == (4, 2) and ("Age", "under 40") not in subgroups.intervals
    assert f"fewer than {numbers.MIN_SUBGROUP_PATIENTS} patients" in text
    shared = [j for j in range(len(FINDINGS)) if j != hernia]
    female = ~male
    expected = np.mean([roc_auc_score(labels[female, j], probs[female, j]) for j in shared])
    assert subgroups.intervals["Sex", "F"]["model"].estimate == pytest.approx(expected, abs=1e-12)
    assert "Sex: 13 (without Hernia)" in text


def test_roc_figure_has_a_legend_when_the_first_finding_is_undefined(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or path)
    rng = np.random.default_rng(0)
    labels = (rng.random((40, len(FINDINGS))) < 0.4).astype(float)
    labels[:, 0] = 0  # the first subplot gets no curves
    probs = {"a": rng.random(labels.shape), "b": rng.random(labels.shape)}
    figures.plot_roc_curves(probs, labels, FINDINGS, tmp_path / "roc.png")
    (legend,) = drawn[0].legends
    assert [text.get_text() for text in legend.get_texts()] == ["a", "b"]


def test_an_empty_map_is_said_so_not_drawn_as_a_flat_tint(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: drawn.append(fig) or path)
    image = np.full((16, 16), 128, dtype=np.uint8)
    panels = [
        figures.ExplanationPanel(image, np.zeros((16, 16)), "empty"),
        figures.ExplanationPanel(image, np.eye(16), "map"),
    ]
    figures.plot_explanations(panels, tmp_path / "explain.png", "m: Grad-CAM")
    empty, mapped = drawn[0].axes[:2]
    assert len(empty.images) == 1 and [t.get_text() for t in empty.texts] == [figures.EMPTY_MAP_NOTE]
    assert len(mapped.images) == 2 and not mapped.texts


def test_compare_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bootstrap resamples of patients (default: 1000)" in text
    assert "seed of the bootstrap (default: 0)" in text and "0 for none (default: 4)" in text


def test_a_failed_compare_leaves_no_output_folder_behind(tmp_path, capsys):
    not_a_run = tmp_path / "empty_run"
    not_a_run.mkdir()
    (tmp_path / "kept").mkdir()
    for output in (tmp_path / "new" / "report", tmp_path / "kept" / "report"):
        assert main(["compare", str(not_a_run), "--output", str(output), "--explain-images", "0"]) == 2
        assert "run_config.yaml not found" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty_run", "kept"]
    assert not any((tmp_path / "kept").iterdir())  # the folder the user had stays; only what compare made goes


def test_subgroup_estimates_equal_scikit_learn_on_the_subgroup(study):
    rows = _rows(study["text"], "Who the models work for")
    cohort, probs = study["cohort"], study["probs"]["gap"]
    for sex in ("F", "M"):
        mask = np.array([s == sex for s in cohort.sex])
        expected = np.mean([roc_auc_score(cohort.labels[mask, j], probs[mask, j]) for j in range(len(FINDINGS))])
        cell = next(row["gap"] for row in rows if (row["Attribute"], row["Group"]) == ("Sex", sex))
        assert cell.startswith(f"{expected:.3f} [")


def test_planted_miscalibration_is_found(study):
    section = study["text"].split("## Can the probabilities be trusted?", 1)[1].split("\n## ", 1)[0]
    labels, probs = study["cohort"].labels, study["probs"]["calibrated"]
    table = _table(study["text"], "Can the probabilities be trusted?")
    ece = expected_calibration_error(probs[:, EFFUSION], labels[:, EFFUSION])
    assert table["calibrated"]["Effusion"] == f"{ece:.3f}" and ece > numbers.ECE_WARNING
    assert table["calibrated"]["All (pooled)"] == f"{expected_calibration_error(probs, labels):.3f}"
    assert "calibrated / Effusion" in section
    assert not re.search(r"calibrated / (?!Effusion)", section)  # its other findings are calibrated


def test_figures_are_real_pngs_and_linked(study):
    for name in ("roc_curves.png", "reliability.png", "training_curves.png"):
        path = study["output"] / name
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert np.asarray(image.convert("L")).var() > 0
        assert f"]({name})" in study["text"]


def test_references_and_the_papers_metrics(study):
    section = study["text"].split("## Published reference values", 1)[1]
    for reference in REFERENCE_RESULTS:  # the model card's numbers, written once
        assert f"| {reference.model} | {reference.test_split} | {reference.mean_auroc:.3f} |" in section
    assert "0.841" in section and "not** the official test list" in section
    assert "2406.00237" in section and "91.6%" in section
    assert f"{np.mean(study['cohort'].labels == 0):.1%}" in section
    # The generated test split is partial: its runs get their own table, never rows among published numbers.
    published, ours = section.split("This report's runs, on a test split not comparable with those:", 1)
    assert "(this report)" not in published and "| **calibrated** (this report) |" in ours
    assert "**partial**, 600 of the 25,596 official test images" in ours
    # ... and the report says so from its first line on.
    assert (
        "patients (**partial**: 600 of the 25,596 official test images; not comparable"
        in (study["text"].split("\n\n")[1])
    )


def test_the_papers_table_sits_beside_the_run_of_each_recipe(study, tmp_path):
    """A run named after a recipe is matched with the paper's model of that recipe, in both kinds of metric."""
    cohort = study["cohort"]
    run = write_run(tmp_path / "cnn_paper", cohort.image_ids, study["probs"]["calibrated"], study["dataset"])
    argv = ["compare", str(run), "--output", str(tmp_path / "report"), "--bootstrap", "20", "--explain-images", "0"]
    assert main(argv) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    after = text.split("### The reproduced paper", 1)[1]
    lines = [line for line in after.split("\n\n", 3)[2].splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {row["Recipe here"]: row for row in (dict(zip(header, _cells(line), strict=True)) for line in lines[2:])}
    assert list(rows) == [f"`{paper.recipe}`" for paper in PAPER_RESULTS]
    cnn = rows["`cnn_paper`"]
    assert cnn["Paper's model"].startswith("CNN:")
    assert (cnn["Paper: accuracy"], cnn["Paper: pooled AUC"]) == ("91%", "0.82")
    metrics = compute_metrics(study["probs"]["calibrated"], cohort.labels, list(FINDINGS))
    assert cnn["Here: accuracy"] == f"{metrics['accuracy']:.1%}"
    assert cnn["Here: micro AUROC"] == f"{metrics['auroc_micro']:.3f}"
    assert cnn["Here: mean AUROC [95% CI]"].startswith(f"{metrics['auroc_mean']:.3f} [")
    assert rows["`resnet34_scratch`"]["Here: accuracy"] == "not in this report"
    assert rows["`vit_r50_b16_pretrained`"]["Paper: accuracy"] == "93.9%"


def test_existing_report_needs_overwrite(study, capsys):
    argv = [
        "compare",
        str(study["runs"][0]),
        "--output",
        str(study["output"]),
        "--bootstrap",
        "5",
        "--explain-images",
        "0",
    ]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_predictions_for_other_images_are_refused(study, capsys):
    cohort = study["cohort"]
    ids = ["99999999_000.png", *cohort.image_ids[1:]]
    run = write_run(study["root"] / "mismatch", ids, cohort.risk, study["dataset"])
    argv = ["compare", str(run), "--output", str(study["root"] / "out_mismatch"), "--explain-images", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "99999999_000.png" in err and cohort.image_ids[0] in err and "test_predictions.csv" in err


def test_runs_on_different_datasets_need_dataset(study, capsys):
    cohort = study["cohort"]
    other = write_run(study["root"] / "elsewhere", cohort.image_ids, cohort.risk, study["root"] / "other_dataset")
    argv = [
        "compare",
        str(study["runs"][0]),
        str(other),
        "--output",
        str(study["root"] / "out_ds"),
        "--explain-images",
        "0",
        "--bootstrap",
        "5",
    ]
    assert main(argv) == 2
    assert "pass --dataset" in capsys.readouterr().err
    assert main([*argv, "--dataset", str(study["root"] / "no_dataset")]) == 2
    assert "cannot load dataset" in capsys.readouterr().err
    assert main([*argv, "--dataset", str(study["dataset"])]) == 0


def test_missing_inputs_fail_before_any_work(study, capsys):
    output = study["root"] / "out_missing"
    assert main(["compare", str(study["root"] / "nowhere"), "--output", str(output)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    argv = ["compare", str(study["runs"][0]), "--output", str(output), "--bbox-csv", str(study["root"] / "no.csv")]
    assert main(argv) == 2
    assert "--bbox-csv" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize("pair", ["gap", "gap:gap", "gap:nobody"])
def test_bad_pairs_are_refused(pair):
    with pytest.raises(ReportError, match="--pair"):
        numbers.comparison_pairs(["calibrated", "gap"], None, [pair])


def test_comparison_pairs_default_to_the_first_run_and_deduplicate():
    assert numbers.comparison_pairs(["a", "b", "c"]) == [("b", "a"), ("c", "a")]
    assert numbers.comparison_pairs(["a", "b", "c"], "b", ["a:b", "c:a"]) == [("a", "b"), ("c", "b"), ("c", "a")]
    with pytest.raises(ReportError, match="--reference"):
        numbers.comparison_pairs(["a"], "z")


def test_best_flags_skip_missing_values():
    assert markdown.best_flags([0.5, None, float("nan"), 0.7, 0.7]) == [False, False, False, True, True]
    assert markdown.best_flags([3, 1, 2], higher_is_better=False) == [False, True, False]
    assert markdown.best_flags([1, 2], higher_is_better=None) == [False, False]


def test_explanations_of_a_vit_and_a_resnet_with_nih_boxes(tmp_path):
    cohort = make_cohort(n_patients=4, images_per_patient=2, seed=3)
    dataset = save_dataset(tmp_path / "dataset", cohort)
    runs = []
    for name, (model, processor) in {"vit": tiny_model("vit", seed=0), "resnet": tiny_resnet(seed=0)}.items():
        run = write_run(tmp_path / name, cohort.image_ids, cohort.risk, dataset)
        runs.append(str(save_model(run, model, processor)))
    boxed = cohort.image_ids[5]
    bbox_csv = tmp_path / "BBox_List_2017.csv"
    bbox_csv.write_text(f"Image Index,Finding Label,Bbox [x,y,w,h],,,\n{boxed},Infiltrate,256,256,512,512,,,\n")
    output = tmp_path / "report"
    argv = [
        "compare",
        *runs,
        "--output",
        str(output),
        "--bootstrap",
        "10",
        "--explain-images",
        "2",
        "--bbox-csv",
        str(bbox_csv),
    ]
    assert main(argv) == 0
    text = (output / "report.md").read_text()
    for name in ("vit", "resnet"):
        with Image.open(output / f"explain_{name}.png") as image:
            assert image.format == "PNG" and np.asarray(image.convert("L")).var() > 0
        assert f"](explain_{name}.png)" in text
    # attention rollout, the finding-independent view, beside Grad-CAM for the ViT only
    assert "](explain_vit_rollout.png)" in text and (output / "explain_vit_rollout.png").is_file()
    assert not (output / "explain_resnet_rollout.png").exists()


def test_explain_targets_put_boxed_images_first_then_positives(study):
    test = reading.load_test_split(str(study["dataset"]))
    test.labels[:3] = 0
    boxes = {test.image_ids[7]: [explain.Box("Mass", 0, 0, 10, 10)]}
    targets = report_figures.explain_targets(test, boxes, 3)
    assert targets[0] == (7, "Mass")
    assert [i for i, _ in targets[1:]] == [3, 4]  # 0–2 have no finding
    assert targets[1][1] == FINDINGS[int(np.flatnonzero(test.labels[3])[0])]
