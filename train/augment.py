"""Clip augmentation: one random transform per clip, applied identically to all its frames.

Spatial transforms move the boxes with the pixels; the random resized crop is chosen so that every
box stays whole inside it (cutting an action out of the crop would teach the model to predict a
box for something it cannot see). Temporal jitter is not applied here: it happens when the frame
indices are sampled (`train.dataset.ClipDataset`), `temporal_jitter` only configures it.

The real-camera transforms (`blur`, `jpeg`, `low_light`, `greyscale`, `shake`, `frame_drop`,
`timestamp`) imitate what a surveillance camera and its recorder do to a picture. They run after
the geometric and colour transforms, in the order a picture travels: the camera moves (shake), the
lens blurs, the sensor darkens and adds noise (low light) or sees infrared (greyscale), the
recorder burns in its clock (timestamp) and compresses (jpeg), and the network drops frames
(frame_drop). Each draws its parameters once per clip; what varies over the frames is what varies
on a real camera: shake's offsets, the sensor noise, the clock's seconds and which frames drop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Sequence

import cv2
import numpy as np

# Parameter ranges of the real-camera transforms (see `AugmentConfig`); each is drawn uniformly.
BLUR_SIGMA = (0.5, 1.5)            # Gaussian sigma, pixels of the clip
JPEG_QUALITY = (20, 60)            # cv2 JPEG quality, integer, inclusive
LOW_LIGHT_SCALE = (0.3, 0.7)       # intensity factor
LOW_LIGHT_GAMMA = (1.0, 1.5)       # exponent on intensities in [0, 1]
LOW_LIGHT_NOISE = (2.0, 6.0)       # sensor noise sigma, grey levels of 255
SHAKE_AMPLITUDE = (0.01, 0.04)     # largest offset, fraction of the frame's width/height
FRAME_DROP_FRACTION = 0.25         # at most this fraction of the frames is dropped
TIMESTAMP_WIDTH = (0.35, 0.6)      # text width, fraction of the frame's width


@dataclass
class AugmentConfig:
    """The `augment:` section of a training config.

    Args:
        enabled: master switch; False leaves clips untouched (evaluation always is).
        temporal_jitter: 0..1, random offset of each sampled frame as a fraction of the spacing
            between samples.
        hflip: probability of a horizontal flip.
        color_jitter: strength s of brightness/contrast/saturation jitter; each factor is drawn
            from [1 - s, 1 + s].
        resized_crop: probability of a random resized crop (resized back to the clip size).
        crop_scale: [min, max] fraction of the frame's area the crop covers (enlarged when
            needed to hold every box).
        blur: probability of a Gaussian blur (out-of-focus or dirty lens, cheap optics): sigma
            drawn from `BLUR_SIGMA` (0.5-1.5 px at the clip's size), the same for every frame.
        jpeg: probability of JPEG compression artefacts (an NVR's or RTSP encoder's blocking and
            ringing): every frame encoded and decoded at one quality drawn from `JPEG_QUALITY`
            (20-60).
        low_light: probability of a dark scene: intensities scaled by `LOW_LIGHT_SCALE`
            (0.3-0.7) after a gamma from `LOW_LIGHT_GAMMA` (1.0-1.5, darkens mid-tones most),
            plus Gaussian luminance noise (new every frame) with sigma from `LOW_LIGHT_NOISE`
            (2-6 grey levels of 255).
        greyscale: probability of an infrared night picture: ITU-R 601 grey replicated to the
            three channels (no tint: the channels are exactly equal, as an IR camera's are).
        shake: probability of camera shake (a pole in the wind, a door slamming): each frame
            translated by a smooth random walk whose largest offset is a fraction drawn from
            `SHAKE_AMPLITUDE` (1-4 %) of the frame per axis, borders replicated. The walk has
            zero mean over the clip, so the boxes (one per clip) stay where they are: they remain
            the best single box for the clip and never leave [0, 1].
        frame_drop: probability of a congested stream: k frames, k from 1 to
            max(1, round(`FRAME_DROP_FRACTION` (0.25) * T)), replaced by their predecessor
            (consecutive drops freeze the picture); the clip keeps its T frames, the boxes stay.
        timestamp: probability of a date and time burnt into a random corner, as NVRs do: white
            or yellow text with a dark outline, its width a fraction `TIMESTAMP_WIDTH`
            (0.35-0.6) of the frame's; the seconds tick once at a random frame.
    """
    enabled: bool = False
    temporal_jitter: float = 0.0
    hflip: float = 0.0
    color_jitter: float = 0.0
    resized_crop: float = 0.0
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    blur: float = 0.0
    jpeg: float = 0.0
    low_light: float = 0.0
    greyscale: float = 0.0
    shake: float = 0.0
    frame_drop: float = 0.0
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        for name in ("temporal_jitter", "hflip", "resized_crop", "blur", "jpeg", "low_light",
                     "greyscale", "shake", "frame_drop", "timestamp"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"augment.color_jitter must be in [0, 1), got {self.color_jitter}")
        if (len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0):
            raise ValueError(f"augment.crop_scale must be [min, max] with 0 < min <= max <= 1, "
                             f"got {self.crop_scale}")


def hflip(clip: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a clip left-right.

    Args:
        clip: (T, H, W, 3) uint8.
        boxes: (K, 4) normalised xyxy.
    Returns:
        The mirrored clip (a new contiguous array) and boxes.
    """
    out = np.ascontiguousarray(clip[:, :, ::-1])
    b = boxes.copy()
    b[:, 0], b[:, 2] = 1.0 - boxes[:, 2], 1.0 - boxes[:, 0]
    return out, b


def color_jitter(clip: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, the same for every frame of the clip.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        strength: each factor is drawn uniformly from [1 - strength, 1 + strength].
        rng: random generator.
    Returns:
        (T, H, W, 3) uint8 RGB.
    """
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    x = clip.astype(np.float32)
    x *= b
    # Contrast pulls towards the clip's mean grey, saturation towards each pixel's grey (ITU-R 601
    # luma, as torchvision's ColorJitter does).
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey.mean()) * c + grey.mean()
    grey = (grey - grey.mean()) * c + grey.mean()
    x = (x - grey[..., None]) * s + grey[..., None]
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def crop_window(width: int, height: int, boxes: np.ndarray, scale: tuple[float, float],
                rng: np.random.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)
                ) -> tuple[int, int, int, int]:
    """A random crop (pixel xyxy, integer) that holds every box whole.

    Args:
        width, height: frame size in pixels.
        boxes: (K, 4) normalised xyxy; K may be 0.
        scale: (min, max) fraction of the frame's area.
        rng: random generator.
        ratio: range of the crop's aspect ratio relative to the frame's.
    Returns:
        (x0, y0, x1, y1) in pixels with 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height.
    """
    area = rng.uniform(*scale)
    r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = min(math.sqrt(area * r), 1.0), min(math.sqrt(area / r), 1.0)
    if len(boxes):
        ux0, uy0 = float(boxes[:, 0].min()), float(boxes[:, 1].min())
        ux1, uy1 = float(boxes[:, 2].max()), float(boxes[:, 3].max())
        ux0, uy0, ux1, uy1 = max(ux0, 0.0), max(uy0, 0.0), min(ux1, 1.0), min(uy1, 1.0)
    else:
        ux0 = uy0 = 1.0
        ux1 = uy1 = 0.0
    cw, ch = max(cw, ux1 - ux0), max(ch, uy1 - uy0)
    # The crop's left edge may lie anywhere that keeps [ux0, ux1] and the frame inside it.
    x_lo, x_hi = max(0.0, ux1 - cw), min(ux0, 1.0 - cw)
    y_lo, y_hi = max(0.0, uy1 - ch), min(uy0, 1.0 - ch)
    cx0 = rng.uniform(x_lo, max(x_lo, x_hi))
    cy0 = rng.uniform(y_lo, max(y_lo, y_hi))
    # Round outwards so the pixel crop still contains the boxes.
    x0 = max(0, int(math.floor(cx0 * width)))
    y0 = max(0, int(math.floor(cy0 * height)))
    x1 = min(width, max(x0 + 1, int(math.ceil((cx0 + cw) * width))))
    y1 = min(height, max(y0 + 1, int(math.ceil((cy0 + ch) * height))))
    return x0, y0, x1, y1


def resized_crop(clip: np.ndarray, boxes: np.ndarray, window: tuple[int, int, int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Crop every frame to `window` and resize back to the clip's size (bilinear).

    Args:
        clip: (T, H, W, 3) uint8.
        boxes: (K, 4) normalised xyxy of the full frame.
        window: (x0, y0, x1, y1) pixel crop.
    Returns:
        (T, H, W, 3) uint8 clip and (K, 4) boxes normalised to the crop, clipped to [0, 1].
    """
    T, H, W, _ = clip.shape
    x0, y0, x1, y1 = window
    out = np.empty_like(clip)
    for t in range(T):
        cv2.resize(clip[t, y0:y1, x0:x1], (W, H), dst=out[t], interpolation=cv2.INTER_LINEAR)
    b = boxes.astype(np.float32).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] * W - x0) / (x1 - x0)
    b[:, [1, 3]] = (b[:, [1, 3]] * H - y0) / (y1 - y0)
    return out, np.clip(b, 0.0, 1.0)


def gaussian_blur(clip: np.ndarray, sigma: float) -> np.ndarray:
    """Blur every frame with the same Gaussian (out of focus, dirty dome, cheap lens).

    Args:
        clip: (T, H, W, 3) uint8.
        sigma: standard deviation in pixels (> 0); the kernel size follows from it.
    Returns:
        A new (T, H, W, 3) uint8 clip.
    """
    out = np.empty_like(clip)
    for t in range(len(clip)):
        cv2.GaussianBlur(clip[t], (0, 0), sigma, dst=out[t], borderType=cv2.BORDER_REPLICATE)
    return out


def jpeg_compress(clip: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode every frame as a JPEG (cv2's defaults: 4:2:0 chroma) at one quality.

    Frame by frame: coding the clip as one tall image would be ~40 % cheaper but lets the
    decoder's chroma upsampling bleed each frame's edge row into its neighbour's.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        quality: 1..100, lower is blockier.
    Returns:
        A new (T, H, W, 3) uint8 RGB clip.
    """
    T, H, W, _ = clip.shape
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    bgr = cv2.cvtColor(clip.reshape(T * H, W, 3), cv2.COLOR_RGB2BGR).reshape(T, H, W, 3)
    out = np.empty_like(bgr)
    for t in range(T):
        out[t] = cv2.imdecode(cv2.imencode(".jpg", bgr[t], params)[1], cv2.IMREAD_COLOR)
    return cv2.cvtColor(out.reshape(T * H, W, 3), cv2.COLOR_BGR2RGB).reshape(T, H, W, 3)


# The 256 quantiles of a standard normal: indexing them with uniform random bytes draws Gaussian
# noise (truncated at +-2.9 sigma) at a fraction of the cost of `Generator.standard_normal`.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])


def low_light(clip: np.ndarray, scale: float, gamma: float, noise_sigma: float,
              rng: np.random.Generator) -> np.ndarray:
    """Darken a clip and add sensor noise, as a camera does at dusk or in a dim room.

    Intensities v in [0, 1] become scale * v ** gamma; then zero-mean Gaussian noise, rounded to
    whole grey levels, new for every pixel and frame and shared by the three channels (luminance
    grain: cameras remove most of the chroma noise), is added and the result clipped to [0, 255].

    Args:
        clip: (T, H, W, 3) uint8.
        scale: intensity factor in (0, 1].
        gamma: exponent >= 1 (larger darkens mid-tones more than highlights).
        noise_sigma: noise standard deviation in grey levels of 255.
        rng: random generator for the noise.
    Returns:
        A new (T, H, W, 3) uint8 clip.
    """
    T, H, W, _ = clip.shape
    lut = np.rint(255.0 * scale * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    dark = cv2.LUT(clip.reshape(T * H, W, 3), lut).reshape(T, H, W, 3)
    levels = np.rint(_NORMAL_QUANTILES * noise_sigma).astype(np.int16)
    noise = levels[rng.integers(0, 256, (T, H, W, 1), dtype=np.uint8)]
    x = dark + noise
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def greyscale(clip: np.ndarray) -> np.ndarray:
    """An infrared night picture: ITU-R 601 grey replicated to three equal channels.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
    Returns:
        A new (T, H, W, 3) uint8 clip whose three channels are equal.
    """
    T, H, W, _ = clip.shape
    grey = cv2.cvtColor(clip.reshape(T * H, W, 3), cv2.COLOR_RGB2GRAY)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB).reshape(T, H, W, 3)


def shake_offsets(frames: int, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth camera-shake path: a Gaussian random walk with zero mean over the clip.

    Args:
        frames: T.
        amplitude: the largest |offset| on each axis, as a fraction of the frame's size.
        rng: random generator.
    Returns:
        (T, 2) float64 (dx, dy) offsets as fractions of width and height; their mean is 0 and
        each column's largest magnitude is `amplitude` (all zeros when T == 1).
    """
    walk = np.cumsum(rng.standard_normal((frames, 2)), axis=0)
    walk -= walk.mean(axis=0)
    peak = np.abs(walk).max(axis=0)
    return walk * (amplitude / np.maximum(peak, 1e-9))


def shake(clip: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Translate each frame by its own offset (bilinear, borders replicated).

    Args:
        clip: (T, H, W, 3) uint8.
        offsets: (T, 2) (dx, dy) fractions of the frame's width and height; content moves by
            +dx * W to the right and +dy * H down.
    Returns:
        A new (T, H, W, 3) uint8 clip.
    """
    T, H, W, _ = clip.shape
    out = np.empty_like(clip)
    for t in range(T):
        m = np.array([[1.0, 0.0, offsets[t, 0] * W], [0.0, 1.0, offsets[t, 1] * H]], np.float32)
        cv2.warpAffine(clip[t], m, (W, H), dst=out[t], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    return out


def drop_frames(clip: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Replace the frames at `dropped` by their predecessor, as a congested RTSP stream does.

    Applied in increasing order, so consecutive drops freeze the picture on the last good frame.

    Args:
        clip: (T, H, W, 3) uint8.
        dropped: frame indices in 1..T-1 (frame 0 has no predecessor).
    Returns:
        A new (T, H, W, 3) uint8 clip, still T frames.
    """
    out = clip.copy()
    for t in np.sort(np.asarray(dropped, dtype=np.int64)):
        out[t] = out[t - 1]
    return out


_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%m-%d-%Y %a %H:%M:%S",
                      "%Y/%m/%d %H:%M:%S")
_TIMESTAMP_FONT = cv2.FONT_HERSHEY_SIMPLEX


def random_timestamps(rng: np.random.Generator) -> tuple[str, str]:
    """A random recorder clock reading and the same one a second later.

    Args:
        rng: random generator.
    Returns:
        Two strings in one of a few NVR formats, e.g. ("2023-07-14 21:07:33", "... 21:07:34").
    """
    fmt = _TIMESTAMP_FORMATS[rng.integers(len(_TIMESTAMP_FORMATS))]
    when = datetime(2015, 1, 1) + timedelta(seconds=int(rng.integers(0, 12 * 365 * 86400)))
    return when.strftime(fmt), (when + timedelta(seconds=1)).strftime(fmt)


def _text_alpha(text: str, scale: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage of `text` and of its 1-px dark outline on a (h, w) canvas.

    Returns:
        fill, outline: (h, w, 1) float32 in [0, 1].
    """
    h, w = size
    _, baseline = cv2.getTextSize(text, _TIMESTAMP_FONT, scale, 1)
    canvas = np.zeros((h, w), np.uint8)
    cv2.putText(canvas, text, (1, h - 1 - baseline), _TIMESTAMP_FONT, scale, 255, 1, cv2.LINE_AA)
    outline = cv2.dilate(canvas, np.ones((3, 3), np.uint8))
    return (canvas[..., None] / np.float32(255)), (outline[..., None] / np.float32(255))


def burn_timestamp(clip: np.ndarray, texts: tuple[str, str], tick: int, corner: int,
                   width: float, colour: tuple[int, int, int]) -> np.ndarray:
    """Burn a clock into a corner: texts[0] on frames [0, tick), texts[1] on [tick, T).

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        texts: the two readings (before and after the seconds tick).
        tick: first frame showing texts[1] (T or more: never).
        corner: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
        width: the text's width as a fraction of the frame's width.
        colour: RGB of the text; its outline is black.
    Returns:
        A new (T, H, W, 3) uint8 clip, changed only inside the text's box in that corner.
    """
    T, H, W, _ = clip.shape
    scale = width * W / cv2.getTextSize(texts[0], _TIMESTAMP_FONT, 1.0, 1)[0][0]
    sizes = [cv2.getTextSize(t, _TIMESTAMP_FONT, scale, 1) for t in texts]
    # The canvas holds either reading, its baseline and the 1-px outline all round.
    h = min(H, max(size[1] + baseline for size, baseline in sizes) + 3)
    w = min(W, max(size[0] for size, _ in sizes) + 3)
    margin = max(1, round(0.02 * min(H, W)))
    x0 = min(margin, W - w) if corner in (0, 2) else max(0, W - margin - w)
    y0 = min(margin, H - h) if corner in (0, 1) else max(0, H - margin - h)
    out = clip.copy()
    for text, frames in ((texts[0], slice(0, tick)), (texts[1], slice(tick, T))):
        region = out[frames, y0:y0 + h, x0:x0 + w]
        if not len(region):
            continue
        fill, outline = _text_alpha(text, scale, (h, w))
        x = region * (1 - outline)
        x = x * (1 - fill) + np.asarray(colour, np.float32) * fill
        region[...] = np.rint(x)
    return out


def _blur_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return gaussian_blur(clip, rng.uniform(*BLUR_SIGMA))


def _jpeg_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return jpeg_compress(clip, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))


def _low_light_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    scale, gamma, sigma = (rng.uniform(*r) for r in (LOW_LIGHT_SCALE, LOW_LIGHT_GAMMA,
                                                      LOW_LIGHT_NOISE))
    return low_light(clip, scale, gamma, sigma, rng)


def _greyscale_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return greyscale(clip)


def _shake_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shake(clip, shake_offsets(len(clip), rng.uniform(*SHAKE_AMPLITUDE), rng))


def _frame_drop_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    T = len(clip)
    if T < 2:
        return clip
    most = min(T - 1, max(1, round(FRAME_DROP_FRACTION * T)))
    k = int(rng.integers(1, most + 1))
    return drop_frames(clip, rng.choice(np.arange(1, T), size=k, replace=False))


def _timestamp_step(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    texts = random_timestamps(rng)
    tick = int(rng.integers(1, len(clip) + 1))
    corner = int(rng.integers(4))
    width = rng.uniform(*TIMESTAMP_WIDTH)
    colour = (255, 255, 255) if rng.random() < 0.5 else (255, 230, 0)
    return burn_timestamp(clip, texts, tick, corner, width, colour)


# The real-camera transforms in the order a picture meets them (see the module docstring): each
# is (AugmentConfig field, step(clip, rng) -> new clip). None moves the boxes.
CAMERA_STEPS = (
    ("shake", _shake_step),
    ("blur", _blur_step),
    ("low_light", _low_light_step),
    ("greyscale", _greyscale_step),
    ("timestamp", _timestamp_step),
    ("jpeg", _jpeg_step),
    ("frame_drop", _frame_drop_step),
)


def perturbation(names: Sequence[str]) -> AugmentConfig:
    """An `AugmentConfig` that applies the named camera transforms to every clip and nothing
    else: for evaluating a model as if the footage came from a worse camera (`vigil eval
    --perturb low_light greyscale`: a dark infrared picture). The draws are seeded per clip, so
    two models see the same perturbed clips.

    Args:
        names: names from `CAMERA_STEPS` (shake, blur, low_light, greyscale, timestamp, jpeg,
            frame_drop).
    Raises:
        ValueError: an unknown name.
    """
    known = [name for name, _ in CAMERA_STEPS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown camera perturbation {unknown[0]!r} (known: {', '.join(known)})")
    return AugmentConfig(enabled=True, temporal_jitter=0.0, hflip=0.0, color_jitter=0.0,
                         resized_crop=0.0, **{name: 1.0 for name in names})


def augment_clip(clip: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the configured random transforms to one clip and its boxes.

    The order is fixed: resized crop, flip, colour jitter, then `CAMERA_STEPS` (shake, blur,
    low light, greyscale, timestamp, jpeg, frame drop), so a seeded rng gives the same result.

    Args:
        clip: (T, H, W, 3) uint8 RGB.
        boxes: (K, 4) normalised xyxy (K may be 0).
        cfg: what to apply and how strongly.
        rng: random generator (the dataset seeds it per sample and epoch).
    Returns:
        (T, H, W, 3) uint8 clip and (K, 4) float32 boxes, normalised xyxy.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not cfg.enabled:
        return clip, boxes
    T, H, W, _ = clip.shape
    if cfg.resized_crop > 0 and rng.random() < cfg.resized_crop:
        window = crop_window(W, H, boxes, (cfg.crop_scale[0], cfg.crop_scale[1]), rng)
        clip, boxes = resized_crop(clip, boxes, window)
    if cfg.hflip > 0 and rng.random() < cfg.hflip:
        clip, boxes = hflip(clip, boxes)
    if cfg.color_jitter > 0:
        clip = color_jitter(clip, cfg.color_jitter, rng)
    # A step draws from rng only when its probability is positive, so configs without the
    # real-camera transforms get exactly the augmentation they got before these existed.
    for name, step in CAMERA_STEPS:
        p = getattr(cfg, name)
        if p > 0 and rng.random() < p:
            clip = step(np.ascontiguousarray(clip), rng)
    return clip, boxes.astype(np.float32)
