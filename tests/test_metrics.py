"""Dev metrics against values computed by hand."""

import math

import numpy as np
import pytest

from tickets.metrics import compute_metrics
from tickets.tasks import get_task

# confusion matrix: TP 3, FN 1, FP 2, TN 4
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PREDICTIONS = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])


def test_mcc_matches_the_confusion_matrix_formula():
    expected = (3 * 4 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (4 + 2) * (4 + 1))  # 10 / sqrt(600)
    assert compute_metrics(get_task("cola"), "dev", PREDICTIONS, LABELS) == {"mcc": pytest.approx(expected)}
    assert expected == pytest.approx(0.4082483)


def test_accuracy_and_f1_of_the_positive_class():
    metrics = compute_metrics(get_task("mrpc"), "dev", PREDICTIONS, LABELS)
    precision, recall = 3 / 5, 3 / 4
    assert metrics == {"accuracy": pytest.approx(0.7), "f1": pytest.approx(2 * precision * recall / (precision + recall))}
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert compute_metrics(get_task("qqp"), "dev", PREDICTIONS, LABELS) == metrics


def test_single_accuracy_tasks():
    for name in ("sst2", "qnli", "rte", "wnli"):
        assert compute_metrics(get_task(name), "dev", PREDICTIONS, LABELS) == {"accuracy": pytest.approx(0.7)}


def test_pearson_and_spearman_on_known_vectors():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    scores = np.array([1.0, 2.0, 3.0, 10.0])
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-3, -2, -1, 6): r = 14 / sqrt(5 * 50); ranks agree exactly
    metrics = compute_metrics(get_task("stsb"), "dev", scores, labels)
    assert metrics == {"pearson": pytest.approx(14 / math.sqrt(250)), "spearman": pytest.approx(1.0)}
    assert metrics["pearson"] == pytest.approx(0.8854377)
    reversed_metrics = compute_metrics(get_task("stsb"), "dev", labels[::-1].copy(), labels)
    assert reversed_metrics == {"pearson": pytest.approx(-1.0), "spearman": pytest.approx(-1.0)}


def test_mnli_metrics_are_named_after_the_split():
    mnli = get_task("mnli")
    labels = np.array([0, 1, 2, 2])
    predictions = np.array([0, 1, 1, 2])
    assert compute_metrics(mnli, "matched", predictions, labels) == {"matched_accuracy": 0.75}
    assert compute_metrics(mnli, "mismatched", predictions, labels) == {"mismatched_accuracy": 0.75}
    with pytest.raises(ValueError, match="split 'dev'"):
        compute_metrics(mnli, "dev", predictions, labels)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="as many predictions as labels"):
        compute_metrics(get_task("sst2"), "dev", np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="masked language modelling"):
        compute_metrics(get_task("mlm"), "dev", np.array([0]), np.array([0]))
