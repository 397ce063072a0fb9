"""Procedural images of shapes with captions: the world of the embedded default CLIP.

Scenes are drawn from a torch.Generator, so a dataset is a pure function of its seed: the
pretraining script and the downstream task regenerate the same images on any machine, and
nothing but the model ships with the package. Images are 32x32 RGB in [0, 1], rendered at 64x64
and averaged down (anti-aliasing).

Pretraining scenes mix three drawing styles with style-specific captions; the word "photo"
appears only with the noisy style. The downstream task draws every class in the outline
("sketch") style, so that the zero-shot prompt "a photo of a {shape}." points the text features
at the wrong style and leaves headroom for prompt tuning; its shifted split adds a background
never seen in pretraining (clutter). Its harder variants (TASK_VARIANTS) add grain and
colour-shape classes.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon", "heart",
          "moon")
COLORS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.65, 0.2), "blue": (0.15, 0.3, 0.9),
          "yellow": (0.95, 0.85, 0.1), "purple": (0.55, 0.2, 0.75), "orange": (1.0, 0.55, 0.05),
          "pink": (1.0, 0.45, 0.7), "brown": (0.5, 0.3, 0.1), "white": (0.95, 0.95, 0.95),
          "black": (0.05, 0.05, 0.05)}
PALETTE = torch.tensor(list(COLORS.values()))  # (colours, 3) RGB, in COLORS' order
SIZES = {"small": 0.45, "medium": 0.6, "large": 0.75}  # radius, in half image widths
BACKGROUNDS = ("plain", "striped", "checkered", "dotted", "gradient", "speckled")
CLUTTERED = len(BACKGROUNDS)  # the unseen background of the shifted split
STYLES = ("flat", "outline", "noisy")
STYLE_PROBABILITIES = (0.6, 0.2, 0.2)

CAPTIONS = {
    "flat": ("a drawing of a {size} {color} {shape} on a {background} background",
             "a drawing of a {color} {shape}", "a {size} {color} {shape}",
             "a {color} {shape} on a {background} background", "a drawing of a {shape}"),
    "outline": ("a sketch of a {color} {shape}", "a sketch of a {shape}",
                "an outline of a {color} {shape}", "a {shape} drawn in outline"),
    "noisy": ("a noisy photo of a {shape}", "a noisy photo of a {color} {shape}",
              "a grainy photo of a {shape}"),
}
TASK_PROMPT = "a photo of a {}."

IMAGE_SIZE = 32
_RENDER = 2 * IMAGE_SIZE


@dataclasses.dataclass
class Scenes:
    """A batch of scene descriptions (integer codes and continuous parameters)."""
    shape: torch.Tensor       # (n,) index into SHAPES
    color: torch.Tensor       # (n,) index into COLORS
    size: torch.Tensor        # (n,) index into SIZES
    background: torch.Tensor  # (n,) index into BACKGROUNDS, or CLUTTERED
    style: torch.Tensor       # (n,) index into STYLES
    center: torch.Tensor      # (n, 2) in [-1, 1]
    angle: torch.Tensor       # (n,) radians
    caption_choice: torch.Tensor  # (n,) which template
    seed: torch.Tensor        # (n,) per-scene seed for textures

    def __len__(self) -> int:
        return self.shape.numel()


def sample_scenes(n: int, generator: torch.Generator, styles=None, backgrounds=None,
                  shapes=None) -> Scenes:
    """n random scenes; `styles`, `backgrounds`, `shapes` restrict the choices (sequences of
    indices; styles otherwise follow STYLE_PROBABILITIES)."""
    def choose(options, default_count):
        options = torch.arange(default_count) if options is None else torch.as_tensor(options)
        return options[torch.randint(len(options), (n,), generator=generator)]

    if styles is None:
        style = torch.multinomial(torch.tensor(STYLE_PROBABILITIES), n, replacement=True,
                                  generator=generator)
    else:
        style = choose(styles, len(STYLES))
    size = choose(None, len(SIZES))
    radius = torch.tensor(list(SIZES.values()))[size]
    center = (torch.rand(n, 2, generator=generator) * 2 - 1) * (0.95 - radius)[:, None]
    return Scenes(shape=choose(shapes, len(SHAPES)), color=choose(None, len(COLORS)), size=size,
                  background=choose(backgrounds, len(BACKGROUNDS)), style=style, center=center,
                  angle=(torch.rand(n, generator=generator) - 0.5) * 0.6,
                  caption_choice=torch.randint(1 << 30, (n,), generator=generator),
                  seed=torch.randint(1 << 30, (n,), generator=generator))


def captions(scenes: Scenes) -> list[str]:
    out = []
    colors, sizes = list(COLORS), list(SIZES)
    for i in range(len(scenes)):
        templates = CAPTIONS[STYLES[int(scenes.style[i])]]
        background = int(scenes.background[i])
        out.append(templates[int(scenes.caption_choice[i]) % len(templates)].format(
            size=sizes[int(scenes.size[i])], color=colors[int(scenes.color[i])],
            shape=SHAPES[int(scenes.shape[i])],
            background=BACKGROUNDS[background] if background < CLUTTERED else "cluttered"))
    return out


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether the unit-size shape covers the local coordinates (u, v) (up is +v)."""
    r = torch.sqrt(u * u + v * v)
    theta = torch.atan2(v, u)
    name = SHAPES[shape]
    if name == "circle":
        return r <= 1
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) <= 0.8
    if name == "triangle":
        return (v >= -0.55) & (math.sqrt(3) * u.abs() + v <= 1)
    if name == "star":
        spike = (theta * 5 / (2 * math.pi) + 0.25) % 1
        return r <= 0.42 + 0.58 * (1 - 2 * (spike - 0.5).abs()) ** 2
    if name == "ring":
        return (r <= 1) & (r >= 0.6)
    if name == "cross":
        return ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1))
    if name == "diamond":
        return u.abs() * 0.8 + v.abs() <= 1
    if name == "hexagon":
        return torch.maximum(u.abs() * 0.866 + v.abs() * 0.5, v.abs()) <= 0.9
    if name == "heart":
        x, y = u * 1.15, v * 1.15 + 0.15
        return x * x + (y - torch.sqrt(x.abs()) * 0.75) ** 2 <= 0.8
    if name == "moon":
        return (r <= 1) & ((u - 0.45) ** 2 + (v - 0.15) ** 2 > 0.75 ** 2)
    raise ValueError(name)


def _background(scenes: Scenes, x: torch.Tensor, y: torch.Tensor,
                g: torch.Generator) -> torch.Tensor:
    n = len(scenes)
    base = 0.25 + 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    base = base * 0.6 + base.mean(1, keepdim=True) * 0.4  # muted
    phase = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
    direction = torch.rand(n, 1, 1, 1, generator=g) * math.pi
    along = x * torch.cos(direction) + y * torch.sin(direction)
    freq = 6 + 6 * torch.rand(n, 1, 1, 1, generator=g)
    patterns = [
        torch.zeros_like(along),                                                    # plain
        0.18 * torch.sign(torch.sin(freq * along + phase)),                         # striped
        0.15 * torch.sign(torch.sin(freq * x + phase) * torch.sin(freq * y + phase)),  # checkered
        -0.2 * ((((x * freq / 3 + phase) % 1 - 0.5) ** 2 + ((y * freq / 3) % 1 - 0.5) ** 2)
                < 0.06).float(),                                                    # dotted
        0.3 * along,                                                                # gradient
        0.12 * torch.sign(torch.sin(37 * x * y + 19 * x + phase * 5)),              # speckled
    ]
    index = torch.where(scenes.background == CLUTTERED, 0, scenes.background)  # plain under clutter
    pattern = torch.stack(patterns)[index, torch.arange(n)]
    image = (base + pattern).clamp(0, 1).expand(n, 3, _RENDER, _RENDER).clone()
    cluttered = (scenes.background == CLUTTERED).nonzero().flatten()
    for i in cluttered.tolist():  # random strokes in the shapes' colours
        for _ in range(6):
            color = PALETTE[torch.randint(len(COLORS), (1,), generator=g)]
            a, b = torch.rand(2, generator=g) * 2 - 1, torch.rand(2, generator=g) * 2 - 1
            d = b - a
            t = (((x[0, 0] - a[0]) * d[0] + (y[0, 0] - a[1]) * d[1]) / (d @ d + 1e-9)).clamp(0, 1)
            dist = torch.sqrt((x[0, 0] - a[0] - t * d[0]) ** 2 + (y[0, 0] - a[1] - t * d[1]) ** 2)
            stroke = dist <= 0.04 + 0.06 * float(torch.rand(1, generator=g))
            image[i][:, stroke] = color.view(3, 1)
    return image


def render(scenes: Scenes, stencil: bool = False) -> torch.Tensor:
    """Images (n, 3, 32, 32) in [0, 1], a pure function of the scenes (textures and clutter come
    from a generator seeded by the scenes' seeds). With `stencil`, each shape is cut out of a
    block of its colour that fills the image: the background shows through the shape."""
    n = len(scenes)
    g = torch.Generator().manual_seed(int(scenes.seed.sum()) % (1 << 62))
    coords = (torch.arange(_RENDER) + 0.5) / _RENDER * 2 - 1
    y, x = torch.meshgrid(-coords, coords, indexing="ij")
    x, y = x.expand(n, 1, _RENDER, _RENDER), y.expand(n, 1, _RENDER, _RENDER)
    image = _background(scenes, x, y, g)
    radius = torch.tensor(list(SIZES.values()))[scenes.size].view(n, 1, 1, 1)
    dx, dy = x - scenes.center[:, 0].view(n, 1, 1, 1), y - scenes.center[:, 1].view(n, 1, 1, 1)
    cos, sin = torch.cos(scenes.angle).view(n, 1, 1, 1), torch.sin(scenes.angle).view(n, 1, 1, 1)
    u, v = (dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius
    covered = torch.zeros(n, 1, _RENDER, _RENDER, dtype=torch.bool)
    for shape in scenes.shape.unique().tolist():
        rows = (scenes.shape == shape).nonzero().flatten()
        mask = _inside(shape, u[rows], v[rows])
        outline = scenes.style[rows] == STYLES.index("outline")
        if bool(outline.any()):  # a band: inside, but not inside the shape shrunk by 30%
            band = mask & ~_inside(shape, u[rows] / 0.7, v[rows] / 0.7)
            mask = torch.where(outline.view(-1, 1, 1, 1), band, mask)
        covered[rows] = mask
    color = PALETTE[scenes.color].view(n, 3, 1, 1)
    image = torch.where(covered != stencil, color, image)
    noisy = (scenes.style == STYLES.index("noisy")).nonzero().flatten()
    if noisy.numel():  # a textured fill and grain over the whole image
        texture = torch.randn(noisy.numel(), 1, _RENDER, _RENDER, generator=g)
        image[noisy] += texture * torch.where(covered[noisy], 0.25, 0.1)
    return F.avg_pool2d(image.clamp(0, 1), 2)


# ---- the downstream tasks of the embedded default ---------------------------------------------

TASK_SPLITS = ("train", "val", "test", "shifted")
_SPLIT_SEEDS = {"train": 101, "val": 202, "test": 303, "shifted": 404}


@dataclasses.dataclass(frozen=True)
class TaskVariant:
    """A downstream task: every class drawn in the outline ("sketch") style.

    colors: 0 for the 10 shape classes ("star"); n for the n x 10 classes of the first n
        colours and every shape ("red star").
    grain: the std of pixel noise over the finished image (a "grainy sketch": both words are in
        the pretraining captions, so a prompt can name the style; Note [Tasks that separate]).
    cluttered: train, val and test on the unseen cluttered background; the shifted split is
        always on the other background kind.
    stencil: instead of outlines, every shape cut out of a block of its colour (render), a
        style no pretraining caption names.
    """
    colors: int = 0
    grain: float = 0.0
    cluttered: bool = False
    stencil: bool = False

    def classes(self) -> list[tuple[int, int | None]]:
        """(shape, colour or None) of every class, in label order."""
        if not self.colors:
            return [(shape, None) for shape in range(len(SHAPES))]
        return [(shape, color) for color in range(self.colors) for shape in range(len(SHAPES))]

    def classnames(self) -> list[str]:
        colors = list(COLORS)
        return [SHAPES[shape] if color is None else f"{colors[color]} {SHAPES[shape]}"
                for shape, color in self.classes()]


# Note [Tasks that separate]
# On "outline" every forward-only method reaches first-order CoOp within a few hundred forward
# passes (the prompt only has to say "sketch"), and on "cluttered" the clutter destroys the image
# features that a text prompt works on (every method, CoOp included, stays below 30%). Grain of
# std 0.1 over the outline drawings sits between: the image features stay informative (CoOp
# climbs from 27% zero-shot to 56% on the 10 shapes, 31% to 64% on 40 colour-shape classes;
# docs/results.md, "The tasks"), but the prompt has to move far from "a photo of a", and the
# forward-only methods separate by how far they get in a budget.
# "colors" adds the many-class side: 40 colour-shape classes under the same grain. "stencil" is
# the strong style shift: every shape cut out of a solid block, which pretraining never drew.
# Zero-shot CLIP is at chance there (it sees a block, not the shape), but the image features
# still tell the shapes apart: a head or a linear probe on them is 30 points above zero-shot,
# the case of real data in a style that the model never saw (scans, sketches, spectrograms).
TASK_VARIANTS = {"outline": TaskVariant(), "cluttered": TaskVariant(cluttered=True),
                 "grainy": TaskVariant(grain=0.1), "colors": TaskVariant(colors=4, grain=0.1),
                 "stencil": TaskVariant(stencil=True)}


def task_split(split: str, per_class: int, seed: int = 0,
               variant: str = "outline") -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a split of an embedded task (TASK_VARIANTS): per_class images of each
    class. "outline" (the default task) draws train, val and test on the pretraining backgrounds
    and "shifted" on the unseen cluttered one; "cluttered" is the other way round; "grainy" and
    "colors" are "outline" under grain, with 10 and 40 classes; "stencil" cuts filled shapes
    out of blocks."""
    if split not in TASK_SPLITS:
        raise ValueError(f"split must be one of {TASK_SPLITS}, got {split!r}")
    if variant not in TASK_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(TASK_VARIANTS)}, got {variant!r}")
    task = TASK_VARIANTS[variant]
    g = torch.Generator().manual_seed(_SPLIT_SEEDS[split] * 1_000_003 + seed)
    classes = task.classes()
    labels = torch.arange(len(classes)).repeat_interleave(per_class)
    cluttered = (split == "shifted") != task.cluttered
    backgrounds = [CLUTTERED] if cluttered else None
    style = "flat" if task.stencil else "outline"
    scenes = sample_scenes(labels.numel(), g, styles=[STYLES.index(style)],
                           backgrounds=backgrounds)
    scenes.shape = torch.tensor([classes[i][0] for i in labels.tolist()])
    if task.colors:
        scenes.color = torch.tensor([classes[i][1] for i in labels.tolist()])
    images = render(scenes, stencil=task.stencil)
    if task.grain:
        images = (images + task.grain * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return images, labels
