"""``demo/geometry.py``: the shape-world segmentation and mask IoU the demo ControlNet is scored with.

Ground truth is the world's own analytic render (``world.render_with_masks``): every captioned scene, plain
and striped, on every background, is segmented back to its mask; IoU is checked on masks whose answer is
known by hand.
"""
from __future__ import annotations

import torch
from lcm_lora_pack.demo import geometry, world


def _every_scene(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = torch.tensor([scene.labels for scene in world.all_scenes()])
    images, coverage = world.render_with_masks(labels, torch.Generator().manual_seed(seed))
    return images, coverage > 0.5, labels


def test_render_with_masks_draws_the_same_images_as_render():
    labels = world.random_labels(8, torch.Generator().manual_seed(1), styled=0.5)
    images, coverage = world.render_with_masks(labels, torch.Generator().manual_seed(2))
    assert torch.equal(images, world.render(labels, torch.Generator().manual_seed(2)))
    assert coverage.shape == (8, world.RESOLUTION, world.RESOLUTION)
    assert 0.1 < (coverage > 0.5).float().mean() < 0.4  # the shapes cover roughly 10-40 % of the image


def test_foreground_mask_recovers_every_scene_of_the_world():
    """Edge pixels exactly half covered are a tie (the colour midway between fill and background) and are left
    out; every other pixel must land on its side (measured: worst IoU 0.978, mean 0.998)."""
    labels = torch.tensor([scene.labels for scene in world.all_scenes()])
    images, coverage = world.render_with_masks(labels, torch.Generator().manual_seed(5))
    sure = (coverage - 0.5).abs() > 0.01
    iou = geometry.mask_iou(geometry.foreground_mask(images) & sure, (coverage > 0.5) & sure)
    worst = iou.argmin().item()
    assert iou.min() > 0.97 and iou.mean() > 0.99, f"{world.Scene.from_labels(labels[worst]).caption}: IoU {iou[worst]:.3f}"


def test_foreground_mask_tells_a_moved_shape_from_the_drawn_one():
    images, masks, _ = _every_scene()
    moved = torch.roll(masks, shifts=(40, 40), dims=(1, 2))
    assert geometry.mask_iou(geometry.foreground_mask(images), moved).max() < 0.35


def test_foreground_mask_of_a_plain_background_is_empty():
    images = torch.tensor(list(world.BACKGROUNDS.values()))[:, :, None, None].expand(-1, -1, 64, 64)
    assert not geometry.foreground_mask(images).any()


def test_mask_iou_on_known_masks():
    a = torch.zeros(4, 4, 4, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[0, :2], b[0, :2] = True, True          # identical: 1
    a[1, :2], b[1, 2:] = True, True          # disjoint: 0
    a[2, :2], b[2, 1:3] = True, True         # 4 shared of 12 covered: 1/3
    iou = geometry.mask_iou(a, b)            # row 3: both empty: 1
    assert torch.allclose(iou, torch.tensor([1.0, 0.0, 1 / 3, 1.0]))
