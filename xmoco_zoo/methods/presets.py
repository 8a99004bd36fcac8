"""The three papers' methods, each a named preset: MoCo v2 plus its regularizer.

Any other combination is a config away: ``method.base=mocov3 method.regularizers=[co2,xmoco]``.
"""

from ._registry import register_preset

register_preset(
    "co2",
    base="mocov2",
    regularizers=["co2"],
    description="CO2: MoCo v2 + consistency over the queue's negatives (arXiv 2010.02217)",
)
register_preset(
    "xmoco",
    base="mocov2",
    regularizers=["xmoco"],
    # Both views are queries: the cross-similarities S12 and S21 need q1 and q2.
    defaults={"method": {"symmetric": True}},
    description="XMoCo: symmetric MoCo v2 + cross-similarity consistency + uniform negatives (arXiv 2206.04676)",
)
register_preset(
    "amcl",
    base="mocov2",
    regularizers=["amcl"],
    description="AMCL: MoCo v2 with H heads and per-pair adaptive temperatures (arXiv 2310.05615)",
)
