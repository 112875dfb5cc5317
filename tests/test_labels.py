import pytest

from pipeline.labels import (
    FINDINGS,
    UnknownFindingError,
    from_multi_hot,
    label2id,
    normalize_finding,
    parse_findings,
    to_multi_hot,
)


def test_fourteen_findings_in_nih_order():
    assert len(FINDINGS) == 14
    assert list(FINDINGS) == sorted(FINDINGS)
    assert label2id()["Pleural_Thickening"] == 11


def test_parse_orders_by_findings_and_no_finding_is_empty():
    assert parse_findings("Emphysema|Cardiomegaly") == ["Cardiomegaly", "Emphysema"]
    assert parse_findings("No Finding") == []


@pytest.mark.parametrize("text", ["Pneumonitis", "Cardiomegaly|", "", "cardiomegaly"])
def test_unknown_or_empty_findings_raise(text):
    with pytest.raises(UnknownFindingError):
        parse_findings(text)


def test_bbox_spelling_alias():
    assert normalize_finding("Infiltrate") == "Infiltration"


def test_multi_hot_round_trip():
    vector = to_multi_hot(["Hernia", "Atelectasis"])
    assert vector[0] == 1.0 and vector[7] == 1.0 and sum(vector) == 2.0
    assert all(isinstance(v, float) for v in vector)
    assert from_multi_hot(vector) == ["Atelectasis", "Hernia"]


def test_from_multi_hot_checks_length():
    with pytest.raises(ValueError, match="14"):
        from_multi_hot([1.0, 0.0])
