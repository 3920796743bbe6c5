"""The built-in procedural image set (the quickstart's): shapes and textures rendered from a seed.

Ten classes (disk, x-cross, triangle, ring, plus, dot grid, square frame, horizontal / vertical
stripes, checkerboard): a lighter object of random colour, position and size on a darker
background of random colour with shading and pixel noise, so the class is carried by shape alone
and a network must really learn it. Deterministic: the same seed, size and resolution give the
same tensors in every process. Any resolution. Kept in memory (`MemorySplit`).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory import Dataset, MemorySplit
from .spec import DatasetSpec

PROCEDURAL_CLASSES = ("disk", "x_cross", "triangle", "ring", "plus", "dots", "frame",
                      "h_stripes", "v_stripes", "checker")
# procedural nuisance variation (units: the short side spans [-1, 1])
JITTER = 0.5             # shape centre uniform in +-JITTER/2
RADIUS = (0.45, 0.75)    # shape radius range
CONTRAST = (0.35, 0.65)  # RGB distance of foreground from background
GRADIENT = 0.2           # amplitude of a linear background shading
BACKGROUND_MAX = 0.5     # background channels uniform in [0, BACKGROUND_MAX]


def _smooth_step(signed_distance: Tensor, softness: float) -> Tensor:
    """Anti-aliased inside mask (1 inside, 0 outside) of a shape given by its signed distance."""
    return torch.sigmoid(-signed_distance / softness)


def procedural_images(labels: Tensor, resolution: tuple[int, int], generator: torch.Generator,
                      noise: float = 0.05) -> Tensor:
    """Render one image per label (class index into PROCEDURAL_CLASSES) as uint8 (N, 3, H, W).

    Every image: a dark random background colour, a lighter random foreground colour (brighter by
    CONTRAST in RGB distance), a shape of random centre (JITTER) and radius (RADIUS, in units of
    half the short side), a random period and phase for the textures, a linear shading across the
    image (GRADIENT) and Gaussian pixel noise. All random draws use `generator`.
    """
    N = len(labels)
    H, W = resolution
    g = generator
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    # normalised coordinates: the short side spans [-1, 1]
    s = min(H, W)
    ys = (torch.arange(H) + 0.5 - H / 2) / (s / 2)
    xs = (torch.arange(W) + 0.5 - W / 2) / (s / 2)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    cy = (u(N) - 0.5) * JITTER * (H / s)
    cx = (u(N) - 0.5) * JITTER * (W / s)
    radius = RADIUS[0] + (RADIUS[1] - RADIUS[0]) * u(N)
    dy = (yy[None] - cy[:, None, None]) / radius[:, None, None]
    dx = (xx[None] - cx[:, None, None]) / radius[:, None, None]
    softness = 2.0 / s / radius[:, None, None]           # ~1 pixel, in shape units
    r = torch.sqrt(dy ** 2 + dx ** 2)
    box = torch.maximum(dy.abs(), dx.abs())
    period = 0.55 + 0.25 * u(N)[:, None, None]
    phase = u(N)[:, None, None] * period

    masks = torch.empty(N, H, W)
    for c, name in enumerate(PROCEDURAL_CLASSES):
        sel = (labels == c).nonzero().flatten()
        if len(sel) == 0:
            continue
        y, x, rr, bb, soft = dy[sel], dx[sel], r[sel], box[sel], softness[sel]
        if name == "disk":
            d = rr - 1
        elif name == "x_cross":  # the plus turned by 45 degrees
            u_, v_ = (x + y) * 0.7071, (x - y) * 0.7071
            d = torch.minimum(torch.maximum(u_.abs() - 0.25, v_.abs() - 1.0),
                              torch.maximum(v_.abs() - 0.25, u_.abs() - 1.0))
        elif name == "triangle":  # upward: below the two slanted edges and above the base
            d = torch.maximum(torch.maximum(y - 0.7, -0.866 * x - 0.5 * y - 0.45),
                              0.866 * x - 0.5 * y - 0.45)
        elif name == "ring":
            d = (rr - 0.75).abs() - 0.22
        elif name == "plus":
            d = torch.minimum(torch.maximum(x.abs() - 0.25, y.abs() - 1.0),
                              torch.maximum(y.abs() - 0.25, x.abs() - 1.0))
        elif name == "frame":
            d = (bb - 0.7).abs() - 0.2
        elif name in ("h_stripes", "v_stripes", "checker", "dots"):
            p, ph = period[sel], phase[sel]
            wave_y = torch.cos(2 * math.pi * (y + ph) / p)
            wave_x = torch.cos(2 * math.pi * (x + ph) / p)
            wave = {"h_stripes": wave_y, "v_stripes": wave_x, "checker": wave_y * wave_x,
                    "dots": wave_y + wave_x - 1.0}[name]
            # texture inside a soft-edged square patch
            inside = _smooth_step(bb - 0.95, soft)
            masks[sel] = inside * (wave > 0).float()
            continue
        else:  # pragma: no cover - the tuple above is exhaustive
            raise AssertionError(name)
        masks[sel] = _smooth_step(d, soft)

    # random colours, one polarity: a lighter object on a darker background, so the class is
    # in the shape (colours carry nothing) yet edges have a consistent sign
    background = u(N, 3) * BACKGROUND_MAX
    lift = CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * u(N, 1)
    tint = 0.4 + 0.6 * u(N, 3)
    foreground = (background + lift * tint / tint.norm(dim=1, keepdim=True)).clamp(0, 1)
    gradient = (u(N, 1, 1) - 0.5) * GRADIENT * (yy[None] * torch.cos(u(N, 1, 1) * 6.28)
                                           + xx[None] * torch.sin(u(N, 1, 1) * 6.28))
    images = (background[:, :, None, None] * (1 - masks[:, None]) + foreground[:, :, None, None] * masks[:, None]
              + gradient[:, None])
    if noise > 0:
        images = images + noise * torch.randn(images.shape, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _procedural_split(n: int, num_classes: int, resolution, seed: int, noise: float) -> MemorySplit:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes          # balanced
    labels = labels[torch.randperm(n, generator=g)]
    chunks = []
    for start in range(0, n, 1024):                 # bounded memory for large sets
        chunks.append(procedural_images(labels[start:start + 1024], resolution, g, noise))
    return MemorySplit(torch.cat(chunks) if chunks else torch.empty(0, 3, *resolution, dtype=torch.uint8),
                       labels, resolution, "procedural")


def load_procedural(spec: DatasetSpec, resolution) -> Dataset:
    num_classes = spec.num_classes or len(PROCEDURAL_CLASSES)
    # distinct streams for train and val, both a function of the data seed only
    train = _procedural_split(spec.train_size, num_classes, resolution, spec.seed * 2 + 1, spec.noise)
    val = _procedural_split(spec.val_size, num_classes, resolution, spec.seed * 2 + 2, spec.noise)
    return Dataset(train, val, num_classes, PROCEDURAL_CLASSES[:num_classes],
                   f"procedural shapes, {num_classes} classes, seed {spec.seed}")


def write_imagefolder(root: str, per_class: int, *, size: tuple[int, int] = (375, 500), num_classes: int = 10,
                      seed: int = 0, noise: float = 0.05, quality: int = 90, start: int = 0) -> int:
    """Write procedural images as an ImageFolder of JPEGs (`root/<class>/<n>.jpg`, H x W = size):
    a real-file data set of any shape (e.g. ImageNet-like 500x375 photos) for tests and benchmarks.
    Files `start .. start + per_class - 1` of every class; returns the number written."""
    import simplejpeg

    g = torch.Generator().manual_seed(seed * 1_000_003 + start)
    labels = torch.arange(num_classes).repeat(per_class)
    for name in PROCEDURAL_CLASSES[:num_classes]:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for first in range(0, len(labels), 32):
        chunk = labels[first:first + 32]
        # rendered at a quarter of the size (the shapes are smooth), noise added at full size
        small = procedural_images(chunk, (max(8, size[0] // 4), max(8, size[1] // 4)), g, 0.0)
        full = F.interpolate(small.float(), size=size, mode="bilinear", align_corners=False)
        full = full + noise * 255 * torch.randn(full.shape, generator=g)
        images = full.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        for k, (label, image) in enumerate(zip(chunk.tolist(), images)):
            n = start + (first + k) // num_classes
            path = os.path.join(root, PROCEDURAL_CLASSES[label], f"{n:06d}.jpg")
            with open(path, "wb") as fh:
                fh.write(simplejpeg.encode_jpeg(image, quality=quality, colorspace="RGB"))
    return len(labels)
