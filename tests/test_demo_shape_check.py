"""The stricter quality check of the demo family (issue 26): the shipped attribute classifier plus the shape fit
and one-fill-colour tests of demo/shape_check.py.

Real renders of the world (plain, striped, the fine-tune's small-shapes world) pass; hard negatives
(demo/malformed.py: lumpy, torn, two-coloured) that the classifier alone reads as their prompt are rejected;
and evaluate.score -- every row of the quality table -- counts only images that pass.
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.demo import evaluate, files, malformed, shape_check, world
from lcm_lora_pack.demo.train import accuracy_report

COUNT = 48


@pytest.fixture(scope="module")
def classifier():
    return files.load_classifier()


def _labels(seed: int, styled: bool = False) -> torch.Tensor:
    return world.random_labels(COUNT, torch.Generator().manual_seed(seed), styled=styled)


@pytest.mark.parametrize(("styled", "jitter"), [(False, world.BASE), (True, world.BASE), (False, world.SMALL)])
def test_real_renders_pass_the_check_with_their_true_labels(styled, jitter):
    labels = _labels(1, styled)
    images = world.render(labels, torch.Generator().manual_seed(2), jitter=jitter)
    report = shape_check.check(images, labels)
    assert bool(report.ok.all()), (report.iou.min(), report.stray.max())
    assert float(report.iou.min()) > 0.93 and float(report.stray.max()) == 0.0


@pytest.mark.parametrize("kind", malformed.KINDS)
def test_malformed_renders_the_classifier_accepts_are_rejected(classifier, kind):
    labels = _labels(3)
    images = malformed.render(labels, kind, torch.Generator().manual_seed(4))
    predicted = classifier.predict(images)
    read_as_prompt = (predicted[:, :3] == labels[:, :3]).all(1)
    assert read_as_prompt.float().mean() > 0.6, "the hard negatives must be hard: the classifier reads most as the prompt"
    report = shape_check.check(images, predicted)
    accepted = read_as_prompt & report.ok
    assert accepted.float().mean() <= 0.1, (kind, report.iou[accepted], report.stray[accepted])


def test_a_lumpy_circle_is_rejected_and_a_real_one_accepted(classifier):
    """The issue's own example, one image each: a red circle on white, lumpy and as the world draws it."""
    labels = torch.tensor([[0, 0, 0, 0]])
    real = world.render(labels, torch.Generator().manual_seed(5))
    lumpy = malformed.render(labels, "lumpy", torch.Generator().manual_seed(5))
    assert classifier.predict(lumpy)[0].tolist() == [0, 0, 0, 0]  # the classifier alone accepts it
    for image, expected in ((real, True), (lumpy, False)):
        report = shape_check.check(image, classifier.predict(image))
        assert bool(report.ok[0]) is expected, (report.iou, report.stray)


def test_a_cross_with_a_stray_second_colour_fails_the_colour_test_only(classifier):
    labels = torch.tensor([[3, 2, 0, 0]] * 8)  # blue crosses on white
    images = malformed.render(labels, "two_colour", torch.Generator().manual_seed(6))
    report = shape_check.check(images, labels)
    assert bool((report.stray > shape_check.MAX_STRAY).all()), report.stray


def test_score_counts_only_well_formed_images(classifier):
    """evaluate.score (every quality row): malformed images the classifier reads right count as wrong under
    ``joint``; ``joint_classifier`` keeps the classifier's reading."""
    labels = _labels(7)
    bad = malformed.render(labels, "two_colour", torch.Generator().manual_seed(8))
    good = world.render(labels, torch.Generator().manual_seed(8))
    _, reference = evaluate.classify(classifier, good)
    row_bad = evaluate.score(classifier, bad, labels, reference)
    row_good = evaluate.score(classifier, good, labels, None)
    assert row_good["accuracy"]["joint"] == 1.0 and row_good["well_formed"] == 1.0
    assert row_bad["accuracy"]["joint_classifier"] > 0.6
    assert row_bad["accuracy"]["joint"] <= 0.1 and row_bad["accuracy"]["joint"] <= row_bad["well_formed"]
    assert "frechet" in row_bad and "frechet" not in row_good


def test_accuracy_report_without_the_check_is_unchanged():
    predicted = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 1]])
    labels = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 0]])
    plain = accuracy_report(predicted, labels)
    assert (plain["joint"], plain["joint_with_style"]) == (1.0, 0.5) and "joint_classifier" not in plain
    strict = accuracy_report(predicted, labels, torch.tensor([False, True]))
    assert (strict["joint"], strict["joint_with_style"], strict["joint_classifier"]) == (0.5, 0.0, 1.0)
