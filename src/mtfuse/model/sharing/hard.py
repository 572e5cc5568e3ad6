"""Hard parameter sharing (the default): every task runs the whole shared encoder; only the heads differ.

Caruana, "Multitask Learning", Machine Learning 28 (1997). Nothing is saved beyond the encoder and the heads
(no ``sharing.json``), so a hard-sharing model directory is exactly what mtfuse wrote before sharing methods.
"""

from __future__ import annotations

from mtfuse.model.sharing.base import SHARING, Sharing


@SHARING.register("hard")
class HardSharing(Sharing):
    """One encoder pass serves every task; ``extra_loss`` is None; shared parameters = the encoder's."""
