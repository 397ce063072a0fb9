"""PromptTask: CoOp-style prompt tuning of a CLIP model (open_clip or Hugging Face), evaluated
with forward passes: the task's maths over an encoder that the engine builds (clip/engine/).

A trainable vector w sets the context tokens of the class prompts "<ctx> {classname}.":
ctx = ctx0 + reshape(A w), ctx0 the embeddings of ``ctx_init`` ("a photo of a"), A a fixed seeded
random projection from an intrinsic dimension d (or ctx = ctx0 + reshape(w) without one, or with
``rank``, ZIP's low-rank prompt: low_rank.py). Image
features are computed once by the frozen image tower; a loss evaluation runs only the text tower
over the class prompts, and ``losses(W)`` does it for a whole population in batched,
memory-bounded forwards, on the engine the task is given (``engine=Engine(...)``: torch, sharing
the prompts' common prefix, or an ONNX export on onnxruntime). A PromptTask is one of the things
a method can tune (tuned.py): the prompt moves the text side of CLIP's logits.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch

import sharpzo_ext.ops as ops
from sharpzo_ext.clip import families
from sharpzo_ext.clip.families import Family, LoadedModel
from sharpzo_ext.clip.engine import Engine
from sharpzo_ext.clip.engine.rows import by_rows
from sharpzo_ext.clip.task import low_rank
from sharpzo_ext.clip.task.features import Features, encode
from sharpzo_ext.clip.task.tuned import Tuned, as_features

__all__ = ["PromptTask", "INTRINSIC_DIM_CAP", "AUTO_INTRINSIC_DIM", "default_intrinsic_dim",
           "context_length", "check_vocabulary"]

PROJECTION_STREAM = 1 << 60  # the stream of the projection A under the task's seed


# The paper's d = 512 for CLIP ViT-B/16 (a context of 4 x 512 numbers); half the context's size
# for smaller text towers, where 512 would exceed the context itself.
INTRINSIC_DIM_CAP = 512
AUTO_INTRINSIC_DIM = f"min({INTRINSIC_DIM_CAP}, the context's size / 2)"  # what "auto" means


def default_intrinsic_dim(n_ctx: int, width: int) -> int:
    """The intrinsic dimension a task tunes unless told otherwise (AUTO_INTRINSIC_DIM)."""
    return min(INTRINSIC_DIM_CAP, n_ctx * width // 2)


def _intrinsic_dim(d, n_ctx: int, width: int, low_rank: bool) -> int | None:
    """The intrinsic dimension that `d` ("auto", None or a number) asks for, or ValueError
    before anything the size of the subspace is allocated: at most the context's n_ctx x width
    numbers (a larger subspace adds nothing, and CMA-ES's covariance grows as its square: 100000
    would be 80 GB), and for ZIP's low-rank prompt at least one number per context token."""
    if d == "auto":
        return default_intrinsic_dim(n_ctx, width)
    if d is None:
        if low_rank:
            raise ValueError("a low-rank prompt needs an intrinsic_dim")
        return None
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"intrinsic_dim must be a positive integer, 'auto' or None, got {d!r}")
    if d > n_ctx * width:
        raise ValueError(f"intrinsic_dim must be at most the context's size, {n_ctx} tokens x "
                         f"{width} = {n_ctx * width}, got {d}")
    if low_rank and d < n_ctx:
        raise ValueError(f"a low-rank prompt needs intrinsic_dim of at least one per context "
                         f"token ({n_ctx}), got {d}")
    return d


def context_length(tokenizer: Callable, ctx_init: str | None, n_ctx: int) -> int:
    """The context's tokens: those of `ctx_init` (its words' tokens, without the start and end
    tokens), or `n_ctx` without one."""
    if ctx_init:
        return int((tokenizer([ctx_init])[0] != 0).sum()) - 2
    return n_ctx


class PromptTask(Tuned):
    """Prompt tuning of ``model`` for ``classnames`` (see the module docstring).

    Args:
        model: an open_clip CLIP or a Hugging Face CLIPModel (frozen; put in eval mode here).
        tokenizer: its tokenizer (open_clip.get_tokenizer(name)).
        classnames: the class names, in label order.
        n_ctx: context tokens when ``ctx_init`` is None (then initialised N(0, 0.02^2) from the
            seed); with ``ctx_init`` their number is the number of its tokens.
        ctx_init: the words whose embeddings start the context ("a photo of a": zero-shot CLIP).
        intrinsic_dim: d, the length of w: "auto" (AUTO_INTRINSIC_DIM: the paper's 512 at
            ViT-B/16's width), a number up to the context's n_ctx x width, or None (tune the
            context directly, d = n_ctx x width).
        rank: None, or ZIP's low-rank prompt of this rank in the intrinsic dimension (Note
            [ZIP's low-rank prompt]; w then holds its factors).
        seed: seeds the projection A (and a random initial context).
        device: where the text tower runs (default: the model's).
        engine: how the text tower runs: precision, backend, shared prefixes, memory bound
            (an Engine; default Engine(): fp32 in torch, shared prefixes, 8192 tokens).
        family: the model's family (a LoadedModel's: PromptTask.of(loaded, ...) passes it);
            None: the family that owns the model object (families.of).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, classnames: Sequence[str],
                 n_ctx: int = 4, ctx_init: str | None = "a photo of a",
                 intrinsic_dim: int | str | None = "auto", seed: int = 0,
                 rank: int | None = None,
                 device=None, engine: Engine | None = None, family: Family | None = None):
        if len(classnames) < 2:
            raise ValueError(f"PromptTask needs at least two classes, got {len(classnames)}")
        self.device = (torch.device(device) if device is not None
                       else next(model.parameters()).device)
        self.engine = Engine() if engine is None else engine
        self.engine.check(self.device)
        self.model = model.eval().requires_grad_(False)  # frozen; gradients only reach W
        self.model.to(self.device)
        self.family = families.of(model) if family is None else family
        self.text = self.family.text_tower(model, self.engine.tower_precision)
        self.classnames = list(classnames)
        embedding = self.text.token_embedding
        width = self.text.width
        n_ctx = context_length(tokenizer, ctx_init, n_ctx)
        prefix = ctx_init or " ".join(["X"] * n_ctx)
        if n_ctx < 1:
            raise ValueError(f"the context needs at least one token, got n_ctx={n_ctx}")
        self.n_ctx, self.ctx_init = n_ctx, ctx_init
        tokens = tokenizer([f"{prefix} {name}." for name in self.classnames]).to(self.device)
        if n_ctx + 2 > tokens.shape[1]:
            raise ValueError(f"n_ctx={n_ctx} context tokens leave no room for the class names in "
                             f"prompts of {tokens.shape[1]} tokens")
        with torch.no_grad():
            if ctx_init:
                self.ctx0 = embedding(tokens[:1, 1:1 + n_ctx])[0].float()
            else:
                g = torch.Generator().manual_seed(seed)
                self.ctx0 = (torch.randn(n_ctx, width, generator=g) * 0.02).to(self.device)
        intrinsic_dim = _intrinsic_dim(intrinsic_dim, n_ctx, width, rank is not None)
        self.seed, self.intrinsic_dim, self.rank = seed, intrinsic_dim, rank
        if rank is not None:
            k = intrinsic_dim // n_ctx
            if rank < 1:
                raise ValueError(f"a low-rank prompt needs rank >= 1, got rank={rank}")
            self.projection = low_rank.maps(n_ctx, k, width, seed, self.device)
            self.dim = low_rank.size(n_ctx, k, rank)
        elif intrinsic_dim is None:
            self.projection = None
            self.dim = n_ctx * width
        else:
            # Note [Projection scale]: w ~ N(0, I) moves the context by about the spread of its
            # own embeddings: entries of A are N(0, s^2) with s = std(ctx0) / sqrt(d).
            scale = float(self.ctx0.std()) / math.sqrt(intrinsic_dim)
            self.projection = ops.sample((n_ctx * width, intrinsic_dim), seed, PROJECTION_STREAM,
                                         device=self.device) * scale
            self.dim = intrinsic_dim
        self.encoder = self.engine.encoder(self.text, tokens, n_ctx, self.ctx0, seed)
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = 100.0 if scale is None else float(scale.detach().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach())

    @classmethod
    def of(cls, loaded: LoadedModel, classnames: Sequence[str], **kwargs) -> "PromptTask":
        """The task over a model that load_model loaded, with the family it was loaded as;
        warns when the checkpoint has no embedding for words of the prompts (check_vocabulary)."""
        task = cls(loaded.model, loaded.tokenizer, classnames, family=loaded.family, **kwargs)
        if loaded.known_tokens is not None:
            check_vocabulary(loaded.tokenizer, [f"{task.ctx_init or ''} {name}." for name in
                                                task.classnames], loaded.known_tokens)
        return task

    # ---- images ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, batch_size: int = 256,
                      progress: bool = False) -> torch.Tensor:
        """L2-normalized final features of preprocessed images (N, 3, H, W) by the frozen image
        tower (features.encode gives every stage)."""
        chunks = range(0, images.shape[0], batch_size)
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            chunks = tqdm(chunks, desc="encoding images", unit="batch", leave=False)
        out = [encode(self.family, self.model, images[i:i + batch_size].to(self.device)).final
               for i in chunks]
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    # ---- text ----------------------------------------------------------------------------------

    # Note [A candidate's context alone]
    # A matrix product over the whole population rounds each row differently with the
    # population's size (the BLAS blocks the product by its shape): a candidate's context then
    # differs in its last bits alone and beside others. The int8 tower turns such a bit into a
    # changed rounding of a quantized activation, and the loss moved by up to 1.4e-4 relative
    # at ViT-B/16 size. Each candidate's shift is computed from its own row alone instead (a
    # matrix-vector product, the same whatever the population), which makes its int8 loss
    # bit-identical alone and in a population of any size (tested at ViT-B/16 size); it costs
    # a few hundredths of a millisecond per candidate there.
    def context(self, W: torch.Tensor) -> torch.Tensor:
        """Context vectors (m, n_ctx, width) for the rows of W (m, dim), each row on its own
        (Note [A candidate's context alone])."""
        W = self.rows(W)
        if self.projection is None:
            return self.ctx0 + W.view(W.shape[0], self.n_ctx, -1)
        if self.rank is not None:
            shifts = [low_rank.shifts(w[None], self.projection, self.rank) for w in W]
        else:
            shifts = [(self.projection @ w).view(1, self.n_ctx, -1) for w in W]
        return self.ctx0 + torch.cat(shifts) if shifts else self.ctx0.expand(0, -1, -1)

    def text_features(self, W: torch.Tensor) -> torch.Tensor:
        """L2-normalized class text features (m, C, E) for the rows of W (differentiable in W
        at fp32 and bf16, for first-order baselines; the forward-only optimizers call it under
        no_grad)."""
        return self.encoder(self.context(W))

    # ---- the Tuned interface: the prompt moves the class features ----------------------------

    def logits(self, W: torch.Tensor, features: Features | torch.Tensor) -> torch.Tensor:
        text = self.text_features(W)
        final = as_features(features).final.to(self.device)
        m, C, E = text.shape  # one row per (candidate, class): Note [Products by row]
        scores = by_rows(lambda rows: rows @ final.T, text.reshape(m * C, E))
        logits = self.logit_scale * scores.view(m, C, -1).transpose(1, 2)
        return logits if self.logit_bias is None else logits + self.logit_bias

    def record(self, w: torch.Tensor) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        metadata = {"n_ctx": str(self.n_ctx), "ctx_init": self.ctx_init or "",
                    "intrinsic_dim": str(self.intrinsic_dim if self.rank else self.dim),
                    "seed": str(self.seed)}
        with torch.no_grad():
            ctx = self.context(w.reshape(1, -1))[0]
        return metadata, {"ctx": ctx.detach().cpu().contiguous()}

    def zero_vector(self) -> torch.Tensor:
        """The w of the initial context (zero-shot CLIP with "{ctx_init} {class}."): zeros, but
        for a low-rank prompt, whose factors start at ZIP's values (Note [ZIP's low-rank
        prompt])."""
        if self.rank is not None:
            k = self.projection.shape[2]
            return low_rank.initial(self.n_ctx, k, self.rank, self.seed, self.device)
        return torch.zeros(self.dim, device=self.device)


def check_vocabulary(tokenizer: Callable, texts: Sequence[str], known: frozenset[int]) -> None:
    """Warns when a checkpoint with a partial token embedding (the embedded default, Note
    [Embedded checkpoint format]) lacks embeddings for words of these texts."""
    ids = tokenizer(list(texts))
    unknown = {t for t in ids.flatten().tolist() if t not in known and t != 0}
    if unknown:
        warnings.warn(f"{len(unknown)} token(s) of the prompts have no embedding in this "
                      "checkpoint (the embedded model only knows its captions' words); they "
                      "act as zero vectors", stacklevel=3)
