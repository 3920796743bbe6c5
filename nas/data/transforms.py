"""Image transforms: per item in the loader workers, per batch on the training device.

Per item (numpy / Pillow, in the workers, so a GPU trial never waits on them):
- `fit_base`: resize so the image covers the *base* size (resolution / crop_ratio) and take its
  centre: the one image every later step starts from (and what the decode cache stores).
- `item`: evaluation: the centre `resolution` crop of the base (resize + centre crop, the model
  card's transform); training: a random-resized crop of the base to `resolution` and a random
  horizontal flip, the draws from a generator seeded by (epoch seed, position), so batches
  depend only on the seed, never on which worker made them. From a freshly decoded image the
  crop box is mapped back to it and one resize makes the output.

Per batch (torch, on the training device): `to_model_input` (uint8 -> float, normalised with
MEAN / STD), the small-image flip + padded crop of in-memory sets, RandAugment (kornia), and
mixup / cutmix (soft targets, one Beta draw per batch as in timm's batch mode).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.util import seed_mix  # noqa: F401 - re-exported: nas.data's callers import it here

MEAN, STD = 0.5, 0.25


# ------------------------------------------------------------------------------ per item
def fit_base(image, base: tuple[int, int]) -> np.ndarray:
    """Resize a PIL image so it covers `base` (H, W) and return its centre crop, (H, W, 3) uint8.

    One Pillow call: the crop box is mapped back to the source so only the kept region is
    resampled (Pillow's bilinear filter widens its support when it shrinks: antialiased)."""
    from PIL import Image

    H, W = base
    scale = max(H / image.height, W / image.width)
    box_w, box_h = W / scale, H / scale
    left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
    out = image.resize((W, H), Image.BILINEAR, box=(left, top, left + box_w, top + box_h))
    return np.asarray(out if out.mode == "RGB" else out.convert("RGB"), dtype=np.uint8)


def sample_crop(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple[float, ...]:
    """Random-resized-crop box (left, top, right, bottom): area fraction uniform in `scale`,
    aspect ratio log-uniform in `ratio`; 10 tries, then the centre crop at the clamped ratio
    (the Inception / torchvision rule)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = math.sqrt(target * aspect)
        h = math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            left = rng.uniform(0, width - w)
            top = rng.uniform(0, height - h)
            return left, top, left + w, top + h
    aspect = width / height
    w, h = (width, width / ratio[0]) if aspect < ratio[0] else \
        (height * ratio[1], height) if aspect > ratio[1] else (width, height)
    w, h = min(w, width), min(h, height)
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def item(source, base: tuple[int, int], size: tuple[int, int], augment: dict | None,
         rng: np.random.Generator | None) -> np.ndarray:
    """One training (`augment`) or evaluation (None) image of `size`, (H, W, 3) uint8.

    `source` is the base image (an array, e.g. from the decode cache) or the decoded PIL image
    the base would be made from; the crop box is drawn in base coordinates either way (the same
    draws, so the cache changes no crop), and from a PIL image it is mapped back to the source
    so that one resize makes the output (no intermediate base image)."""
    crop = augment["crop"] if augment else "none"
    if crop == "random_resized":
        box = sample_crop(rng, base[0], base[1], augment["rrc_scale"], augment["rrc_ratio"])
    else:
        top, left = (base[0] - size[0]) // 2, (base[1] - size[1]) // 2
        box = (left, top, left + size[1], top + size[0])
    out = _render(source, base, size, box)
    if crop == "padded":
        out = _padded_crop(out, rng)
    if augment and augment["hflip"] and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def _render(source, base, size, box) -> np.ndarray:
    from PIL import Image

    H, W = size
    if isinstance(source, np.ndarray):
        if box[2] - box[0] == W and box[3] - box[1] == H and float(box[0]).is_integer() \
                and float(box[1]).is_integer():
            return source[int(box[1]):int(box[1]) + H, int(box[0]):int(box[0]) + W]
        return np.asarray(Image.fromarray(np.ascontiguousarray(source)).resize((W, H), Image.BILINEAR, box=box))
    scale = max(base[0] / source.height, base[1] / source.width)
    left0, top0 = (source.width - base[1] / scale) / 2, (source.height - base[0] / scale) / 2
    mapped = (left0 + box[0] / scale, top0 + box[1] / scale, left0 + box[2] / scale, top0 + box[3] / scale)
    out = source.resize((W, H), Image.BILINEAR, box=mapped)
    return np.asarray(out if out.mode == "RGB" else out.convert("RGB"))


def _padded_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    H, W = image.shape[:2]
    pad = max(1, min(H, W) // 8)
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, size=2)
    return padded[dy:dy + H, dx:dx + W]


# ----------------------------------------------------------------------------- per batch
def to_model_input(images: Tensor, resolution: tuple[int, int], channels_last_input: bool) -> Tensor:
    """uint8 (B, H, W, C) or (B, C, H, W) on the device -> float (B, C, H, W) in [0, 1] at
    `resolution` (bilinear, antialiased when shrinking)."""
    x = images.permute(0, 3, 1, 2) if channels_last_input else images
    x = x.float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(resolution):
        x = F.interpolate(x, size=tuple(resolution), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > resolution[1])
    return x


def normalise(x: Tensor) -> Tensor:
    return x.sub_(MEAN).div_(STD)


def flip_and_padded_crop(x: Tensor, generator: torch.Generator, hflip: bool = True,
                         padded: bool = True) -> Tensor:
    """Random horizontal flip and a reflect-padded random crop (pad = 1/8 of the size)."""
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=generator) < 0.5
    if hflip:
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    if not padded:
        return x
    pad = max(1, min(H, W) // 8)
    padded_x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator).tolist()
    return torch.stack([padded_x[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


def random_resized_crop(x: Tensor, augment: dict, seed: int) -> Tensor:
    """Batch random-resized crop to the same size (kornia), for in-memory sets."""
    import kornia.augmentation as K

    crop = K.RandomResizedCrop(tuple(x.shape[-2:]), scale=tuple(augment["rrc_scale"]),
                               ratio=tuple(augment["rrc_ratio"]))
    with _seeded(seed, x.device):
        return crop(x)


def randaugment(x: Tensor, n: int, m: int, seed: int) -> Tensor:
    """kornia's RandAugment (n ops of magnitude m out of 30) on a [0, 1] batch."""
    from kornia.augmentation.auto import RandAugment

    with _seeded(seed, x.device):
        return RandAugment(n=n, m=m)(x).clamp_(0, 1)


def mix(x: Tensor, y: Tensor, num_classes: int, mixup: float, cutmix: float,
        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mixup or cutmix (half the batches each when both are on) with the flipped batch; labels
    become soft targets (B, num_classes) that `F.cross_entropy` accepts. Off: (x, y) unchanged."""
    if mixup <= 0 and cutmix <= 0:
        return x, y
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(1, generator=generator)) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, generator)
    partner = x.flip(0)
    if use_cutmix:
        H, W = x.shape[-2:]
        cut_h, cut_w = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
        cy = int(torch.randint(0, H, (1,), generator=generator))
        cx = int(torch.randint(0, W, (1,), generator=generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, H)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, W)
        x = x.clone()
        x[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)   # the area actually kept
    else:
        x = x.mul(lam).add_(partner, alpha=1 - lam)
    target = F.one_hot(y, num_classes).float()
    return x, target.mul(lam).add_(target.flip(0), alpha=1 - lam)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) from two Gamma draws of `generator` (torch's Beta takes none)."""
    g = torch._standard_gamma(torch.full((2,), float(alpha)), generator=generator)
    return float(g[0] / g.sum())


class _seeded:
    """Run kornia (which draws from torch's global generators) from a fixed seed, leaving the
    caller's random state as it was."""

    def __init__(self, seed: int, device: torch.device):
        self.devices = [device.index or 0] if device.type == "cuda" else []
        self.seed = seed

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=self.devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def batch_augment(x: Tensor, y: Tensor, augment: dict | None, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """The device-side part of `augment` on a [0, 1] batch: RandAugment, then mixup / cutmix."""
    if not augment:
        return x, y
    if augment["randaugment"]:
        x = randaugment(x, augment["randaugment"]["n"], augment["randaugment"]["m"], seed_mix(seed, 1))
    if augment["mixup"] > 0 or augment["cutmix"] > 0:
        x, y = mix(x, y, num_classes, augment["mixup"], augment["cutmix"],
                   torch.Generator().manual_seed(seed_mix(seed, 2)))
    return x, y
