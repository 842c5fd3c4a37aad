"""BlazePose's person detector: SSD anchors, box and keypoint decoding, weighted NMS.

`pose_detection.tflite` looks at the whole frame letterboxed to 224x224 and, for each of its
2,254 anchors, scores a person and regresses a box (the face's) and four keypoints: 0 the
mid-hip, 1 a point that encodes the full body's size and rotation (2 and 3 the same for the
upper body). Only keypoints 0 and 1 are used, to place the landmark model's region of interest.

Numbers from MediaPipe's `pose_detection_cpu.pbtxt` (mediapipe 0.10.14, Apache-2.0): the SSD
anchor options, coordinate scale 224, sigmoid score clipped at +-100, weighted non-maximum
suppression at IoU 0.3. `min_score` is the legacy `mp.solutions.pose` default,
`min_detection_confidence=0.5`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import crop_rect
from .runner import TfliteModel

INPUT_SIZE = 224
# SsdAnchorsCalculator options of the pose detector.
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
MIN_SCALE, MAX_SCALE = 0.1484375, 0.75
SCORE_CLIP = 100.0
NMS_IOU = 0.3
NUM_KEYPOINTS = 4


@dataclass(frozen=True)
class PersonDetection:
    """One person found by the detector.

    Attributes:
        score: detector confidence in [0, 1].
        box: (x1, y1, x2, y2) of the face box, normalised to the frame.
        keypoints: (4, 2) normalised (x, y): mid-hip, full-body size point, mid-shoulder,
            upper-body size point.
    """
    score: float
    box: tuple[float, float, float, float]
    keypoints: np.ndarray


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = ANCHOR_STRIDES
                ) -> np.ndarray:
    """Anchor centres of BlazePose's detector, in the order of its outputs.

    MediaPipe's `SsdAnchorsCalculator` with one aspect ratio, an interpolated scale and
    `fixed_anchor_size`: layers of equal stride share a grid, each adds two anchors per cell.

    Returns:
        float32 (2254, 2): (x, y) centres normalised to the input.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        same = 0
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        cells = int(np.ceil(input_size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, 2 * same, axis=1).reshape(-1, 2))
        layer += same
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box against (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression.

    The best remaining candidate absorbs every candidate overlapping it by more than `iou`;
    its box and keypoints become their score-weighted mean, its score stays its own.

    Args:
        scores: (N,); boxes: (N, 4) xyxy; keypoints: (N, K, 2).
    Returns:
        [(score, box (4,), keypoints (K, 2))], best first.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        overlap = _iou(boxes[top], boxes[order])
        overlap[0] = 1.0             # the best absorbs itself, even a box with no area
        group, order = order[overlap > iou], order[overlap <= iou]
        weights = scores[group][:, None]
        total = weights.sum()
        box = (boxes[group] * weights).sum(0) / total
        kps = (keypoints[group] * weights[:, :, None]).sum(0) / total
        out.append((float(scores[top]), box, kps))
    return out


class PoseDetector:
    """Finds people in a frame with `pose_detection.tflite`.

    Args:
        model: the detector's runner (`TfliteModel`).
        min_score: detections below this confidence are dropped.
    """

    def __init__(self, model: TfliteModel, min_score: float = 0.5):
        self.model = model
        self.min_score = min_score
        self.anchors = ssd_anchors()

    def __call__(self, image: np.ndarray) -> list[PersonDetection]:
        """People in `image` (RGB uint8 (H, W, 3)), best first (none: an empty list)."""
        tensor, padding, _ = crop_rect(image, None, (INPUT_SIZE, INPUT_SIZE), (-1.0, 1.0),
                                       border_zero=True)
        raw_boxes, raw_scores = self.model(tensor)[:2]
        return self.decode(raw_boxes.reshape(-1, 12), raw_scores.reshape(-1), padding)

    def decode(self, raw_boxes: np.ndarray, raw_scores: np.ndarray,
               padding: tuple[float, float, float, float]) -> list[PersonDetection]:
        """Detections from the model's raw outputs.

        Args:
            raw_boxes: (2254, 12): box (cx, cy, w, h) then 4 keypoints (x, y), in input pixels
                relative to each anchor's centre.
            raw_scores: (2254,) logits.
            padding: the letterbox (left, top, right, bottom) of the input.
        """
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.astype(np.float64), -SCORE_CLIP,
                                             SCORE_CLIP)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, anchors, scores = raw_boxes[keep], self.anchors[keep], scores[keep]
        cx = raw[:, 0] / INPUT_SIZE + anchors[:, 0]
        cy = raw[:, 1] / INPUT_SIZE + anchors[:, 1]
        w, h = raw[:, 2] / INPUT_SIZE, raw[:, 3] / INPUT_SIZE
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) / INPUT_SIZE
        kps = kps + anchors[:, None, :]
        left, top, right, bottom = padding
        sx, sy = 1.0 - left - right, 1.0 - top - bottom
        out = []
        for score, box, kp in weighted_nms(scores, boxes, kps):
            box = np.array([(box[0] - left) / sx, (box[1] - top) / sy,
                            (box[2] - left) / sx, (box[3] - top) / sy])
            kp = np.stack([(kp[:, 0] - left) / sx, (kp[:, 1] - top) / sy], axis=1)
            out.append(PersonDetection(score, tuple(float(v) for v in box), kp.astype(np.float32)))
        return out
