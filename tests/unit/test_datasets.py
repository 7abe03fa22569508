"""The worker's text: a .txt, a .jsonl or a ``datasets`` folder, split the same way every time,
and each malformed one refused in one line naming what is wrong."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from gpucost.worker import hf
from gpucost.worker.data import WorkerError

LABELS = {"spam": 0, "ham": 1}
ROWS = [{"text": f"message number {i}", "label": "spam" if i % 3 else "ham"} for i in range(40)]


def test_a_saved_dataset_splits_as_the_same_rows_in_jsonl_do(tmp_path):
    DatasetDict({"train": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    saved = hf.texts(tmp_path / "saved", "saved", 7, LABELS)
    lines = hf.texts(tmp_path / "rows.jsonl", "rows", 7, LABELS)
    assert saved == lines and len(saved.held_out) == 4 and len(saved.train) == 36
    by_text = {r["text"]: LABELS[r["label"]] for r in ROWS}
    assert saved.held_out_labels == [by_text[t] for t in saved.held_out]
    assert hf.texts(tmp_path / "saved", "saved", 8, LABELS) != saved  # the seed decides
    plain = hf.texts(tmp_path / "saved", "saved", 7)  # a causal LM reads the text alone
    assert plain.train == saved.train and plain.train_labels is None


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (
            lambda d: Dataset.from_list([{"body": r["text"]} for r in ROWS]).save_to_disk(str(d)),
            "no text or label column (it has body)",
        ),
        (
            lambda d: DatasetDict({"test": Dataset.from_list(ROWS)}).save_to_disk(str(d)),
            "splits test, none named train",
        ),
        (lambda d: d.mkdir(), "not a datasets save_to_disk directory ("),
    ],
)
def test_a_malformed_saved_dataset_is_one_line(tmp_path, make, said):
    make(tmp_path / "data")
    with pytest.raises(WorkerError) as e:
        hf.texts(tmp_path / "data", "s3://b/data", 0, LABELS)
    assert str(e.value).startswith(f"dataset s3://b/data: {said}")
    assert "\n" not in str(e.value)
