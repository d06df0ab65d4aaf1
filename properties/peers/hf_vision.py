"""HF transformers' CLIP contrastive loss, as a ``contrastive_loss`` adapter.

``transformers.models.clip.modeling_clip.image_text_contrastive_loss`` (transformers 5.25.0) on
float32 logits built as ``CLIPModel.forward`` builds them: both embeddings L2-normalised, then
``logits_per_text = text_embeds @ image_embeds.T * logit_scale.exp()``. A peer rather than a bundled
implementation: importing transformers' CLIP module takes seconds, which the main job
(``python -m properties``) does not spend; ``tests/test_peers.py`` runs it under pytest.
"""

from __future__ import annotations

from ._common import make, require, version


def hf_clip():
    transformers = require("transformers")
    require("transformers.models.clip.modeling_clip")
    from ..vision import ContrastiveAdapter, _torch_clip

    return [make(ContrastiveAdapter, name="HF image_text_contrastive_loss float32", contrastive_loss=_torch_clip, preset="refimpl.vision.clip_loss",
                 library=f"transformers {version(transformers)}")]
