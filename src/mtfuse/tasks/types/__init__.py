"""Task types, one file each; importing this package registers every one of them in ``TASK_TYPES``."""

from mtfuse.tasks.types.base import IGNORE_INDEX, TASK_TYPES, TaskType, register
from mtfuse.tasks.types.classification import Classification, PairClassification
from mtfuse.tasks.types.generation import Generation
from mtfuse.tasks.types.intent_slots import IntentSlots
from mtfuse.tasks.types.masked_lm import MaskedLM
from mtfuse.tasks.types.multilabel import MultiLabel
from mtfuse.tasks.types.multiple_choice import MultipleChoice
from mtfuse.tasks.types.regression import Regression
from mtfuse.tasks.types.span_qa import SpanQA
from mtfuse.tasks.types.srl import SemanticRoles
from mtfuse.tasks.types.token import TokenClassification

__all__ = [
    "IGNORE_INDEX",
    "TASK_TYPES",
    "Classification",
    "Generation",
    "IntentSlots",
    "MaskedLM",
    "MultiLabel",
    "MultipleChoice",
    "PairClassification",
    "Regression",
    "SemanticRoles",
    "SpanQA",
    "TaskType",
    "TokenClassification",
    "register",
]
