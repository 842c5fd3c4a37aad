"""Box conversions and (G)IoU, against values worked out by hand."""
import pytest
import torch

from detector.box_ops import (box_iou, cxcywh_to_xyxy, denormalize_xyxy, giou_loss_cxcywh,
                              normalize_xyxy, pairwise_giou_cxcywh, xyxy_to_cxcywh)


def cxcywh(x1, y1, x2, y2):
    """A hand-written xyxy box in cxcywh, without going through the code under test."""
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


# (box A xyxy, box B xyxy, GIoU worked out by hand)
CASES = [
    # identical: IoU 1, the enclosing box is the box itself
    ((0.1, 0.2, 0.5, 0.6), (0.1, 0.2, 0.5, 0.6), 1.0),
    # nested: B (area 0.04) inside A (area 0.16): IoU = 0.25, enclosing box = A
    ((0.0, 0.0, 0.4, 0.4), (0.1, 0.1, 0.3, 0.3), 0.25),
    # disjoint side by side: IoU 0, union 0.02, enclosing 0.3x0.1 = 0.03 -> -(0.01/0.03)
    ((0.0, 0.0, 0.1, 0.1), (0.2, 0.0, 0.3, 0.1), -1.0 / 3.0),
    # disjoint diagonal: union 0.02, enclosing 0.09 -> -(0.07/0.09)
    ((0.0, 0.0, 0.1, 0.1), (0.2, 0.2, 0.3, 0.3), -7.0 / 9.0),
    # half overlap: inter 0.02, union 0.06, enclosing 0.06 -> 1/3
    ((0.0, 0.0, 0.2, 0.2), (0.1, 0.0, 0.3, 0.2), 1.0 / 3.0),
]


@pytest.mark.parametrize("a,b,expected", CASES)
def test_giou_matches_hand_computed_value(a, b, expected):
    ba = torch.tensor([cxcywh(*a)], dtype=torch.float64)
    bb = torch.tensor([cxcywh(*b)], dtype=torch.float64)
    assert pairwise_giou_cxcywh(ba, bb).item() == pytest.approx(expected, abs=1e-6)
    assert pairwise_giou_cxcywh(bb, ba).item() == pytest.approx(expected, abs=1e-6)
    # torchvision's loss adds eps=1e-7 to its denominators, hence the looser tolerance.
    assert giou_loss_cxcywh(ba, bb).item() == pytest.approx(1.0 - expected, abs=1e-5)


def test_pairwise_giou_is_a_matrix_and_loss_is_elementwise():
    a = torch.tensor([cxcywh(*c[0]) for c in CASES], dtype=torch.float64)
    b = torch.tensor([cxcywh(*c[1]) for c in CASES], dtype=torch.float64)
    matrix = pairwise_giou_cxcywh(a, b)
    assert matrix.shape == (len(CASES), len(CASES))
    expected = torch.tensor([c[2] for c in CASES], dtype=torch.float64)
    torch.testing.assert_close(matrix.diagonal(), expected)
    torch.testing.assert_close(giou_loss_cxcywh(a, b), 1 - expected, atol=1e-5, rtol=0)
    assert giou_loss_cxcywh(a, b, reduction="sum").item() == pytest.approx(
        float((1 - expected).sum()), abs=1e-5)


def test_iou_of_nested_boxes():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert box_iou(a, b).item() == pytest.approx(0.25)


def test_cxcywh_xyxy_round_trip():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(20, 4, generator=g) * 0.5 + 0.1
    xyxy = cxcywh_to_xyxy(boxes)
    torch.testing.assert_close(xyxy[:, 2] - xyxy[:, 0], boxes[:, 2])
    torch.testing.assert_close((xyxy[:, 1] + xyxy[:, 3]) / 2, boxes[:, 1])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), boxes)


def test_pixel_normalised_conversion():
    px = torch.tensor([[192.0, 108.0, 960.0, 1080.0]])
    norm = normalize_xyxy(px, (1920, 1080))
    torch.testing.assert_close(norm, torch.tensor([[0.1, 0.1, 0.5, 1.0]]))
    torch.testing.assert_close(denormalize_xyxy(norm, (1920, 1080)), px)
