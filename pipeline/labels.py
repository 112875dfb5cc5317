"""The 14 ChestX-ray14 findings in their fixed order, and conversions between names and multi-hot vectors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.errors import UserError

# Alphabetical, as NIH lists them. Column i of every `labels` vector, logit i of every model.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
# Other spellings found in NIH files (BBox_List_2017.csv writes "Infiltrate").
ALIASES = {"Infiltrate": "Infiltration"}


class UnknownFindingError(UserError, ValueError):
    """A label string names something that is not one of the 14 findings."""


def normalize_finding(name: str, names: Sequence[str] = FINDINGS) -> str:
    """Return the canonical spelling of one finding name, or raise `UnknownFindingError`."""
    name = ALIASES.get(name.strip(), name.strip())
    if name not in names:
        raise UnknownFindingError(f"unknown finding {name!r}; expected one of: {', '.join(names)}")
    return name


def parse_findings(text: str, names: Sequence[str] = FINDINGS) -> list[str]:
    """Parse NIH `Finding Labels` ("A|B" or "No Finding") into finding names in `names` order."""
    text = text.strip()
    if text == NO_FINDING:
        return []
    if not text:
        raise UnknownFindingError(f"empty label; expected {NO_FINDING!r} or findings joined by '|'")
    found = {normalize_finding(part, names) for part in text.split("|")}
    return [name for name in names if name in found]


def to_multi_hot(findings: Iterable[str], names: Sequence[str] = FINDINGS) -> list[float]:
    """Multi-hot float vector (the dtype BCEWithLogitsLoss needs) for a list of finding names."""
    present = {normalize_finding(f, names) for f in findings}
    return [1.0 if name in present else 0.0 for name in names]


def from_multi_hot(
    vector: Sequence[float], names: Sequence[str] = FINDINGS, threshold: float = 0.5
) -> list[str]:
    """Finding names whose entry in `vector` is at or above `threshold`."""
    if len(vector) != len(names):
        raise ValueError(f"vector has {len(vector)} entries, expected {len(names)}")
    return [name for name, value in zip(names, vector, strict=True) if value >= threshold]


def id2label(names: Sequence[str] = FINDINGS) -> dict[int, str]:
    return dict(enumerate(names))


def label2id(names: Sequence[str] = FINDINGS) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}
