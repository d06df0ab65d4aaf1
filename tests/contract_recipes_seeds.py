"""Fuzz recipes of the "seeds" family (issue 24): refimpl.model_configs and the modules added
with it (see contract_recipes.py for the recipe format)."""

from __future__ import annotations

from hypothesis import strategies as st

from refimpl import model_configs as MC

from .contract_recipes import recipe

CONFIG = st.sampled_from(sorted(MC.PUBLISHED.values(), key=lambda c: (c.d_model, c.n_layers)))


@recipe("refimpl.model_configs.attention_variant", kinds=dict(n_heads="count", n_kv_heads="count"))
def _(draw):
    g = draw(st.integers(1, 8))
    return dict(n_heads=g * draw(st.integers(1, 8)), n_kv_heads=g)


recipe("refimpl.model_configs.ffn_expansion", kinds=dict(cfg="object"))(lambda draw: dict(cfg=draw(CONFIG)))
recipe("refimpl.model_configs.ffn_parameter_fraction", kinds=dict(cfg="object"))(lambda draw: dict(cfg=draw(CONFIG)))
