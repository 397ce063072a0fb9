"""Image features by stage: what the frozen image tower gives for a batch of images, computed
once and cached (Note [Image features by stage] in families/base.py says where each family's
stages are).

    features = encode(family, model, images)    # Features: .final (N, E), .pre (N, P)
    features.stage("pre")                        # what a head on the pre-projection features reads
    features[rows]                               # the same images' subset, both stages

Both stages are L2-normalized, so a head or an adapter sees directions only, whatever the
scale of the tower's activations.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from sharpzo_ext.clip.families.base import Family

__all__ = ["STAGES", "Features", "StageError", "encode"]

STAGES = ("final", "pre")  # the projected image feature; the feature the projection reads


class StageError(ValueError):
    """A stage that these features do not have, saying why."""


@dataclasses.dataclass(frozen=True)
class Features:
    """The image features of N images: `final` (N, E), what CLIP compares with text, and `pre`
    (N, P), the feature before the image tower's projection (None where the family cannot
    reach it)."""
    final: torch.Tensor
    pre: torch.Tensor | None = None

    def stage(self, name: str) -> torch.Tensor:
        """The features of stage `name` (one of STAGES), or StageError if there are none."""
        if name not in STAGES:
            raise StageError(f"a stage is one of {', '.join(STAGES)}, got {name!r}")
        out = getattr(self, name)
        if out is None:
            raise StageError("this image tower's pre-projection features are not known (only "
                             "open_clip ViTs and ModifiedResNets and Hugging Face CLIPs have "
                             "them); use the final features")
        return out

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages these features have."""
        return tuple(name for name in STAGES if getattr(self, name) is not None)

    def __len__(self) -> int:
        return self.final.shape[0]

    def __getitem__(self, rows) -> "Features":
        return Features(self.final[rows], None if self.pre is None else self.pre[rows])

    def to(self, device) -> "Features":
        return Features(self.final.to(device), None if self.pre is None else self.pre.to(device))

    def tensors(self) -> dict[str, torch.Tensor]:
        """{stage: features} of the stages these features have (what a cache file keeps)."""
        return {name: getattr(self, name) for name in self.stages}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Features":
        return cls(tensors["final"], tensors.get("pre"))

    @classmethod
    def cat(cls, parts: list["Features"]) -> "Features":
        """The images of `parts`, in order (parts of the same stages)."""
        pre = None if parts[0].pre is None else torch.cat([p.pre for p in parts])
        return cls(torch.cat([p.final for p in parts]), pre)


@torch.no_grad()
def encode(family: Family, model: torch.nn.Module, images: torch.Tensor) -> Features:
    """Features of preprocessed images (N, 3, H, W), already on the model's device, by the
    family's image tower: both stages L2-normalized, in float32."""
    final, pre = family.image_stages(model, images)
    return Features(F.normalize(final.float(), dim=-1),
                    None if pre is None else F.normalize(pre.float(), dim=-1))
