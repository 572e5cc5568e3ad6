"""Ensembles of tasks whose outputs are texts (``TaskType.fused_as_text``: generation): each member gives one
text per example, and the ensemble selects one of them by minimum-Bayes-risk (Kumar & Byrne 2004) with chrF
as the utility (``mtfuse.tasks.types.generation.mbr_select``).

Why selection and not averaging: members' texts cannot be averaged, and averaging next-token probabilities
inside beam search needs every member loaded at once and the same tokenizer; MBR needs only the members'
dev predictions (as every other ensemble here), works across tokenizers and picks the consensus output, the
one the other members support most. Nothing is tuned (uniform weights), so the dev score is not out-of-fold
and no fold is needed; stacking has no meaning for texts and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtfuse.errors import MtfuseError
from mtfuse.tasks.types import TaskType

UTILITY = "chrf"
METHOD = "mbr"  # what ensemble.json records as the method of a text task


@dataclass
class TextArrays:
    """Aligned dev texts of M members on one task (the counterpart of ``TaskArrays`` for text outputs).

    ``texts[m][i]``: member m's text for dev example i; ``gold``: each example's references as written."""

    task: str
    type: TaskType
    metrics: list[str]
    members: list[Path]
    texts: list[list[str]]
    gold: list[Any] = field(repr=False)
    labels: list[str] | None = None

    @property
    def n_members(self) -> int:
        return len(self.texts)

    @property
    def n_examples(self) -> int:
        return len(self.gold)

    @property
    def P(self) -> np.ndarray:  # the units count ``Fusion.spec`` reports: one per example, no columns
        return np.zeros((self.n_members, self.n_examples, 0))

    def score(self, out: list[str]) -> dict[str, float]:
        return self.type.score(self, list(out), self.gold)

    def member_scores(self) -> list[dict[str, float]]:
        return [self.score(t) for t in self.texts]

    def records(self, out: dict[str, Any]) -> list[dict[str, Any]]:
        """Prediction records (``mtfuse.evaluate.records``' layout): the selected text and the member it came
        from, with the gold."""
        return [
            {"index": i, "text": t, "member": int(k), "gold": self.gold[i]}
            for i, (t, k) in enumerate(zip(out["texts"], out["members"], strict=True))
        ]


def align_texts(members: list[Any], task: str) -> TextArrays:
    """The members' dev texts for ``task``, checked to be of the same examples (same references)."""
    from mtfuse.fusion.ensemble.members import load_task

    loaded = [load_task(m, task) for m in members]
    ref = loaded[0]
    tt = ref.info.type
    for lt in loaded[1:]:
        if not tt.fuses_with(lt.info.type):
            raise MtfuseError(
                f"task '{task}': {lt.member.path} has a {lt.info.type.name} task but {ref.member.path} has a "
                f"{tt.name} one"
            )
        if len(lt.gold) != len(ref.gold) or not all(
            tt.same_gold(a, b) for a, b in zip(ref.gold, lt.gold, strict=True)
        ):
            raise MtfuseError(
                f"task '{task}': {lt.member.path} and {ref.member.path} have different dev examples (other "
                "references or another number); members must be evaluated on the same dev examples"
            )
    texts = [
        [tt.text_of(r, f"{lt.member.path}: task '{task}' record {i}") for i, r in enumerate(lt.records)]
        for lt in loaded
    ]
    return TextArrays(task, tt, list(ref.info.metrics), [m.path for m in members], texts, list(ref.gold))


def select(texts: list[list[str]], weights: list[float] | None = None) -> dict[str, Any]:
    """Per example, the MBR choice among the members' texts: ``{"texts": [...], "members": [...]}``."""
    from mtfuse.tasks.types.generation import mbr_select

    n = len(texts[0]) if texts else 0
    chosen = [mbr_select([t[i] for t in texts], weights) for i in range(n)]
    return {"texts": [texts[k][i] for i, k in enumerate(chosen)], "members": chosen}


def fuse_texts(ta: TextArrays, method: str) -> Any:
    """One text task's ensemble (a ``protocol.TaskFusion``): MBR whatever ``method`` the label tasks use."""
    from mtfuse.fusion.ensemble.protocol import TaskFusion

    if method == "stack":
        raise MtfuseError(
            f"task '{ta.task}': stacking learns from members' probabilities over labels, and a {ta.type.name} "
            f"task's outputs are texts; ensemble it with `mtfuse ensemble` (minimum-Bayes-risk selection with "
            f"{UTILITY}), or leave it out with --tasks"
        )
    weights = [1.0 / ta.n_members] * ta.n_members
    out = select(ta.texts, weights)
    # the --method applies to the label tasks of the same runs; texts are always selected by MBR
    note = f"'{method}' fuses labels; a {ta.type.name} task's texts are fused by MBR with {UTILITY}"
    params = {"weights": weights, "utility": UTILITY}
    return TaskFusion(ta, METHOD, out, ta.score(out["texts"]), params, [], note, None)  # type: ignore[arg-type]
