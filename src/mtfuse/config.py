"""Typed configuration: a YAML file plus dotted ``key=value`` overrides, validated by pydantic.

Unknown keys and method names are errors that list the valid choices. ``{data_dir}`` inside a data path is
replaced by the top-level ``data_dir`` value, so one config works for any local copy of the data.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.types import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from mtfuse.errors import ConfigError
from mtfuse.params import Strict


class DataConfig(Strict):
    """Where one task's data comes from. ``format`` picks a reader (see ``mtfuse.tasks.readers``)."""

    format: str
    path: str | None = None  # a directory (glue, conll) or, for generic formats, a default folder for files
    task: str | None = None  # GLUE task name (CoLA, SST-2, MRPC, RTE, WNLI, STS-B) for format 'glue'
    # split -> file (relative to `path` when set), for csv/tsv/jsonl/parquet/conll/lines. When given, it lists
    # every split: default file names in `path` are then not looked for.
    files: dict[str, str] = Field(default_factory=dict)
    name: str | None = None  # Hugging Face datasets name (format 'hf'), or a local dataset directory
    config_name: str | None = None  # Hugging Face datasets config
    # mtfuse split -> source split name: the dataset's split (format 'hf'), or what `{split}` becomes in
    # `field_files` (format 'lines'; e.g. {dev: valid})
    splits: dict[str, str] = Field(default_factory=dict)
    # text files (every format but parquet and hf): a Python codec name such as utf-8, iso-8859-1, cp1252
    encoding: str = "utf-8"
    # csv / tsv: false = the file has no header row; the columns are then named by `columns`: a list of
    # names (every row must have that many fields), or {field: 0-based column index}; without `columns`
    # they are named by their index as strings ("0", "1", ...: text_fields: ["3"])
    header: bool = True
    columns: list[str] | dict[str, int] | None = None
    delimiter: str | None = None  # csv / tsv: the one-character field separator; default ',' (csv), tab (tsv)
    quoting: bool | None = None  # csv / tsv: honour "..." quoting; default on for csv, off for tsv (as GLUE)
    # format 'lines' (one example a line): a regular expression whose named groups are the fields, e.g.
    # '^(?P<label>\S+) (?P<text>.*)$' for 'LABEL text' lines (TREC: '^(?P<label>[^:]+):\S+ (?P<text>.*)$');
    # without it (and without field_files) each line is the field 'text'
    pattern: str | None = None
    # format 'lines', one file per field, aligned line by line: field -> file name with `{split}`, relative
    # to `path`, e.g. {text: "{split}_text.txt", label: "{split}_labels.txt"} or {tokens: "{split}/seq.in"}
    field_files: dict[str, str] = Field(default_factory=dict)
    # label ids -> names, applied to the task's label field (each tag of a token task): a file (JSON object
    # or list; 'ID NAME' lines; or one name a line, the first line being id `label_map_start`) or a mapping
    label_map: str | dict[str, str] | None = None
    label_map_start: int = 0  # id of the first line of a one-name-a-line label_map file (AG News: 1)
    # carve a dev split out of train when the data has none: the fraction of train (0 < x < 1) it takes;
    # seeded by dev_seed, stratified by `stratify` (default: the label field of a task with classes)
    dev_from_train: float | None = None
    dev_seed: int = 0
    stratify: str | None = None
    # format 'parallel': the source and target file endings after each split's stem (['.en.gz', '.de.gz'])
    suffixes: list[str] = Field(default_factory=list)
    # format 'dailydialog': turns before a response that form its context (0: all of them), joined by
    context_turns: int = Field(1, ge=0)
    turn_separator: str = " "
    # with dev_from_train: rows with the same value of this field stay on one side (the predicates of one
    # sentence, so that dev holds no sentence train has seen); replaces `stratify`
    dev_group: str | None = None
    # format 'squad' without a train split (XQuAD): divide the articles of the train file, by title and seeded
    # by dev_seed, into splits with these fractions ({train: 0.6, dev: 0.2, test: 0.2})
    split_by_article: dict[str, float] | None = None

    @field_validator("split_by_article")
    @classmethod
    def _article_fractions_ok(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v or set(v) - {"train", "dev", "test"} or any(not 0.0 < x < 1.0 for x in v.values()):
            raise ValueError(
                f"split_by_article maps train / dev / test to fractions between 0 and 1, got {v}"
            )
        if abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split_by_article fractions must sum to 1, got {sum(v.values()):g}")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding_ok(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(
                f"unknown encoding '{v}' (use a Python codec name such as utf-8 or iso-8859-1)"
            ) from None
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter_ok(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in "\r\n\"'"):
            raise ValueError(f"delimiter {v!r} must be one character, not a quote or a line break")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern_ok(cls, v: str | None) -> str | None:
        import re

        if v is None:
            return v
        try:
            compiled = re.compile(v)
        except re.error as e:
            raise ValueError(f"pattern {v!r} is not a valid regular expression: {e}") from None
        if not compiled.groupindex:
            raise ValueError(f"pattern {v!r} has no named group; name the fields, e.g. (?P<text>.*)")
        return v

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):  # YAML reads {1: World} with int keys
            return {str(k): v[k] for k in v}
        return v

    @field_validator("dev_from_train")
    @classmethod
    def _fraction_ok(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError(
                f"dev_from_train must be a fraction of train between 0 and 1 (e.g. 0.1), got {v}"
            )
        return v

    @model_validator(mode="after")
    def _options_fit(self) -> DataConfig:
        if self.columns is not None:
            if self.header:
                raise ValueError(
                    "columns names the columns of a file without a header row: add header: false"
                )
            names = list(self.columns)
            dup = sorted({c for c in names if names.count(c) > 1})
            if dup or not names:
                raise ValueError(f"columns must name each column once; got {names}")
            if isinstance(self.columns, dict) and any(i < 0 for i in self.columns.values()):
                raise ValueError(f"columns indices are 0-based and not negative; got {self.columns}")
        if self.field_files:
            if self.files:
                raise ValueError("give files (one file a split) or field_files (one file a field), not both")
            if self.pattern:
                raise ValueError(
                    "pattern splits the lines of one file; with field_files each file is a field"
                )
            missing = [f for f, name in self.field_files.items() if "{split}" not in name]
            if missing:
                raise ValueError(f"field_files['{missing[0]}'] must contain {{split}} (e.g. {{split}}.txt)")
        return self


class GenerationConfig(Strict):
    """A generation task's target side and decoding (type ``generation``); the source side is ``max_length``.

    Decoding keys can be overridden at evaluate / predict time (``tasks.NAME.generation.num_beams=4``)."""

    max_target_length: int = Field(64, ge=2)  # target tokens with the start and end tokens
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    prefix: str = ""  # T5-style task prefix put before the source text ("translate English to German: ")
    source_join: str = " "  # a source that is a list of strings (SciTLDR sentences) is joined with this
    # several references: train on the first only ("first") or on each as its own pair ("each")
    train_references: Literal["first", "each"] = "first"
    # decoding (HF generate): greedy = num_beams 1 without sampling
    num_beams: int = Field(1, ge=1)
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = Field(0, ge=0)
    do_sample: bool = False
    top_k: int = Field(50, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0  # sampling seed (decoding is reproducible)
    max_new_tokens: int = Field(64, ge=1)


class IntentSlotsOptions(Strict):
    """Options of an ``intent_slots`` task (``mtfuse.tasks.types.intent_slots``)."""

    slot_weight: NonNegativeFloat = Field(1.0, allow_inf_nan=False)  # loss = CE(intent) + w * CE(slots)
    # labels train never has (ATIS test): unseen_class = designated classes the head never predicts, so they
    # count as errors and no example is dropped (SlotGated-SLU's _UNK); error = refuse them, as other types do
    unseen_labels: Literal["unseen_class", "error"] = "unseen_class"
    # intent ids -> names and slot-tag ids -> names, each in data.label_map's formats (a file, resolved as data
    # files are, or a mapping); data.label_map itself maps one id space, and this label has two
    intent_map: str | dict[str, str] | None = None
    slot_map: str | dict[str, str] | None = None

    @field_validator("intent_map", "slot_map", mode="before")
    @classmethod
    def _map_keys(cls, v: Any) -> Any:
        if isinstance(v, dict):  # YAML reads {1: flight} with int keys
            return {str(k): v[k] for k in v}
        return v


class SpanQAConfig(Strict):
    """Extractive QA windows and decoding (type ``span_qa``); a window's length is the task's ``max_length``."""

    # context tokens two consecutive windows share; default max_length // 3 (HF run_qa: 128 of 384)
    doc_stride: int | None = Field(None, ge=1)
    max_answer_length: int = Field(30, ge=1)  # words (and punctuation marks) an answer may span
    n_best: int = Field(20, ge=1)  # start and end candidates tried per example (top-k x top-k)


class MaskedLMOptions(Strict):
    """Options of a ``masked_lm`` task (``mtfuse.tasks.types.masked_lm``): BERT's masking (Devlin et al.
    2019) and what predictions show."""

    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)  # the share of (non-special) tokens chosen
    mask_replace_prob: float = Field(0.8, ge=0.0, le=1.0)  # of the chosen: replaced by [MASK]
    random_replace_prob: float = Field(0.1, ge=0.0, le=1.0)  # of the chosen: a random token; the rest stay
    # dev / test (and every batch that is not a training draw) are masked once, with this seed and each
    # text's token ids: the same masks at every evaluation and in every run, so perplexities compare
    eval_seed: int = 0
    top_k: int = Field(5, ge=1)  # fillers shown per masked position in prediction records

    @model_validator(mode="after")
    def _shares_fit(self) -> MaskedLMOptions:
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError(
                "mask_replace_prob + random_replace_prob must be at most 1 (the rest of the chosen tokens "
                f"stay as they are), got {self.mask_replace_prob} + {self.random_replace_prob}"
            )
        return self


class TaskConfig(Strict):
    name: str
    type: str
    data: DataConfig
    text_fields: list[str] | None = None  # 1 (sentence) or 2 (pair); for token tasks the token-list field
    label_field: str | None = None  # not read by types without labels (masked_lm)
    labels: list[str] | None = None  # fixed label order; default: sorted labels seen in train
    metrics: list[str] | None = None  # default: the task type's metrics
    max_length: int = Field(128, ge=2)  # [CLS] and [SEP] take two positions
    loss_weight: NonNegativeFloat = Field(1.0, allow_inf_nan=False)
    # draw this task's seeded subsets (subset.train / subset.eval, train-holdout) as the named task does: an
    # auxiliary task on the same data (masked_lm on a task's text) then reads exactly that task's rows
    subset_as: str | None = None
    pooling: Literal["pooler", "cls", "mean"] | None = None  # default: model.pooling
    # encoder layer the head reads (hierarchical sharing); default: last. The index into HF hidden_states:
    # 0 = embeddings, 1..L = transformer layers, negative = from the top (-1 = last)
    layer: int | None = None
    generation: GenerationConfig | None = None  # type 'generation' only (default: its defaults)
    intent_slots: IntentSlotsOptions | None = None  # type intent_slots only; default: IntentSlotsOptions()
    span_qa: SpanQAConfig | None = None  # type 'span_qa' only (default: its defaults)
    masked_lm: MaskedLMOptions | None = None  # type 'masked_lm' only (default: its defaults)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError(f"task name '{v}' must be letters, digits, '-' or '_'")
        return v


class SharingConfig(BaseModel):
    """``method`` (hard, soft, adapters, mmoe: ``mtfuse.model.sharing``) plus that method's own parameters."""

    model_config = ConfigDict(extra="allow")
    method: str = "hard"


class LstmConfig(Strict):
    """The from-scratch encoder of ``model.name_or_path: lstm``: embeddings + (Bi)LSTM (``mtfuse.model.lstm``)."""

    embedding_dim: PositiveInt = 128
    hidden_size: PositiveInt = 256  # per direction: heads read 2 x hidden_size when bidirectional
    layers: PositiveInt = 1
    bidirectional: bool = True
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the embeddings and between layers
    # the word pieces: 'default' = the packaged MiniLM's tokenizer, or a model directory or hub name
    tokenizer: str = "default"
    # seed of the initial weights; default: train.seed. Runs merge only when they start from one init
    init_seed: int | None = None

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_ok(cls, v: str) -> str:
        if not v.strip() or v == "lstm":
            raise ValueError(
                "name a tokenizer: 'default' (MiniLM's word pieces), a model directory or a hub name"
            )
        return v


class ModelConfig(Strict):
    # 'default' = the packaged all-MiniLM-L6-v2 encoder; 'lstm' = embeddings + (Bi)LSTM from scratch (model.lstm)
    name_or_path: str = "default"
    # 'pooler' = the encoder's own pooler, as in HF; default: what the checkpoint was trained with
    # (sentence-transformers configs name their pooling), else 'pooler'
    pooling: Literal["pooler", "cls", "mean"] | None = None
    head_dropout: float | None = Field(None, ge=0.0, lt=1.0)  # default: the encoder's hidden_dropout_prob
    sharing: SharingConfig = Field(default_factory=SharingConfig)  # how tasks share the encoder
    # generation tasks on an encoder-decoder checkpoint (T5, BART...): a copy of its decoder each (per_task)
    # or one decoder for all, told apart by their task prefixes (shared: trained and merged with the encoder)
    decoder: Literal["per_task", "shared"] = "per_task"
    # under hard sharing, model/hf/<task>/ for each generation task with its own decoder: the task's
    # encoder-decoder as plain transformers loads it (a full copy of the encoder each: about 190 MB per
    # BERT2BERT task on MiniLM); false leaves them out (mtfuse itself never reads them)
    hf_copies: bool = True
    # a run directory to start from: its encoder, and the heads of tasks with the same name and head spec
    # (``mtfuse.training.init_from``); name_or_path still gives the tokenizer and must match its vocabulary
    init_from: str | None = None
    lstm: LstmConfig | None = None  # name_or_path 'lstm' only; default: LstmConfig()

    @model_validator(mode="after")
    def _lstm_only_for_lstm(self) -> ModelConfig:
        if self.lstm is not None and self.name_or_path != "lstm":
            raise ValueError(
                f"model.lstm configures the from-scratch encoder of model.name_or_path: lstm, but "
                f"name_or_path is '{self.name_or_path}'; set name_or_path: lstm or remove model.lstm"
            )
        return self


class TrainConfig(Strict):
    seed: int = 42
    epochs: PositiveFloat = Field(3.0, allow_inf_nan=False)
    max_steps: PositiveInt | None = None  # overrides epochs when set
    batch_size: PositiveInt = 32  # global batch (all processes, before accumulation)
    eval_batch_size: PositiveInt = 128
    grad_accum: PositiveInt = 1
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: NonNegativeFloat = Field(3e-5, allow_inf_nan=False)  # 0 freezes the weights (a pipeline check)
    weight_decay: NonNegativeFloat = Field(0.01, allow_inf_nan=False)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: PositiveFloat = 1e-8
    momentum: NonNegativeFloat = Field(0.9, allow_inf_nan=False)
    scheduler: Literal["linear", "constant", "cosine"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    warmup_steps: NonNegativeInt | None = None
    max_grad_norm: PositiveFloat | None = Field(1.0, allow_inf_nan=False)
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where native, else fp32

    eval_every: PositiveInt | None = None  # steps; default: once per epoch
    checkpoint_every: PositiveInt | None = None  # steps; default: eval_every
    # also write a checkpoint when this many minutes passed since the last one (bounds what a crash loses)
    checkpoint_minutes: PositiveFloat | None = Field(10.0, allow_inf_nan=False)
    keep_checkpoints: PositiveInt = 2
    select: Literal["last", "best"] = "last"  # which weights end up in run_dir/model
    early_stopping_patience: PositiveInt | None = None  # evaluations without improvement before stopping
    group_by_length: bool = False
    step_mode: Literal["sampled", "joint"] = (
        "sampled"  # sampled: one task's batch a step; joint: every task's
    )
    joint_tasks: PositiveInt | None = (
        None  # joint mode: a sampled subset of k tasks per step (loss-level methods only)
    )
    diagnostics: bool = True  # at every evaluation, log the cosine matrix of task gradients (the conflicts)
    log_every: PositiveInt = 10
    tensorboard: bool = True  # false drops 'tensorboard' from log_with
    # experiment trackers, through accelerate's tracker API: tensorboard (RUN_DIR/tb), wandb, mlflow, comet_ml,
    # aim, clearml, dvclive, swanlab, trackio; each needs its own package. log.jsonl is always written.
    log_with: list[str] = Field(default_factory=lambda: ["tensorboard"])
    tracker_project: str | None = None  # project / experiment name; default: the run directory's name
    tracker_init: dict[str, dict[str, Any]] = Field(default_factory=dict)  # tracker -> its init kwargs
    progress: bool = True
    cpu: bool = False  # force the CPU even where a GPU is present

    @field_validator("precision", mode="before")
    @classmethod
    def _no_is_false(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `no` (precision: no, train.precision=no) as false: it means fp32 here
        return "no" if v is False else v

    @field_validator("log_with")
    @classmethod
    def _trackers_known(cls, v: list[str]) -> list[str]:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        unknown = [t for t in v if t not in LOGGER_TYPE_TO_CLASS]
        if unknown:
            raise ValueError(f"unknown tracker {unknown}; choose from {sorted(LOGGER_TYPE_TO_CLASS)}")
        return list(dict.fromkeys(v))

    @field_validator("adam_betas")
    @classmethod
    def _betas_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v


class SamplingConfig(BaseModel):
    """``method`` plus that sampler's own hyperparameters (checked against the sampler's schema)."""

    model_config = ConfigDict(extra="allow")
    method: str = "proportional"


class WeightingConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str = "static"  # static = each task's loss_weight (1 by default: equal weighting)


class SubsetConfig(Strict):
    """Keep a seeded random subset of each split: short CPU runs of the full configs."""

    train: PositiveInt | None = None
    eval: PositiveInt | None = None
    seed: int = 0


class CardConfig(Strict):
    """What the model card (``README.md`` of a run) says that the run cannot know: all optional."""

    license: str | None = None  # a Hugging Face Hub license id, e.g. apache-2.0, mit, cc-by-4.0
    datasets: list[str] = Field(default_factory=list)  # Hub dataset ids the model was trained on
    language: str | list[str] | None = None  # ISO 639-1 code(s), e.g. en


class RunConfig(Strict):
    data_dir: str = "."
    cache_dir: str | None = None  # tokenisation cache; default ~/.cache/mtfuse (or $MTFUSE_CACHE)
    only_tasks: list[str] | None = None  # train/evaluate only these tasks of the config
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: list[TaskConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    subset: SubsetConfig = Field(default_factory=SubsetConfig)
    card: CardConfig = Field(default_factory=CardConfig)  # model card metadata (license, datasets, language)

    @model_validator(mode="after")
    def _check_tasks(self) -> RunConfig:
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate task names: {dup}")
        for t in self.tasks:
            if t.subset_as is not None and t.subset_as not in names:
                raise ValueError(
                    f"tasks.{t.name}.subset_as: no task named '{t.subset_as}'; choose from {names}"
                )
        if self.only_tasks:
            unknown = [n for n in self.only_tasks if n not in names]
            if unknown:
                raise ValueError(f"only_tasks names unknown tasks {unknown}; choose from {names}")
            self.tasks = [t for t in self.tasks if t.name in self.only_tasks]
            self.only_tasks = None
        if not self.tasks:
            raise ValueError("the config declares no task")
        return self


# ---------------------------------------------------------------------------------------------- loading


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` to a raw config dict. ``tasks.NAME.key`` addresses a task by its name."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like key=value (for example train.lr=1e-4)")
    key, _, value = override.partition("=")
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_item(node, part, here)
        elif isinstance(node, dict):
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"override '{key}': '{here}' is not a section")
    last = parts[-1]
    if isinstance(node, list):
        item = _list_item(node, last, key)
        new = _parse_value(value)
        if not isinstance(new, dict):
            raise ConfigError(
                f"override '{key}={value}': '{key}' is a task; give a mapping "
                f"(e.g. {key}.max_length=64 changes one key)"
            )
        item.clear()
        item.update(new)
    elif isinstance(node, dict):
        node[last] = _parse_value(value)
    else:
        raise ConfigError(f"override '{key}': '{'.'.join(parts[:-1])}' is not a section")


def _list_item(items: list[Any], part: str, here: str) -> Any:
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    names = [i.get("name") for i in items if isinstance(i, dict)]
    raise ConfigError(f"override '{here}': no task named '{part}'; choose from {names}")


def _valid_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names valid at ``loc`` (the parent of an unknown key), found by walking the schema."""
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        for _ in range(3):  # unwrap list[X] / X | None
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if args and not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                ann = args[0]
        model = ann
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(tuple(e["loc"][:-1]))
            choose = f"; choose from [{', '.join(valid)}]" if valid else ""
            lines.append(f"unknown config key '{loc}'{choose}")
        elif e["type"] == "missing":
            lines.append(f"missing config key '{loc}'")
        else:
            lines.append(f"config key '{loc}': {e['msg']}" if loc else e["msg"])
    return f"{source}: invalid config:\n  " + "\n  ".join(lines)


def _substitute(cfg: RunConfig) -> RunConfig:
    data_dir = os.path.abspath(os.path.expanduser(cfg.data_dir))
    cfg.data_dir = data_dir

    def sub(s: str | None) -> str | None:
        if s is None:
            return None
        return os.path.expanduser(s.replace("{data_dir}", data_dir))

    if cfg.model.init_from is not None:  # absolute: the resolved config.yaml must not depend on the cwd
        cfg.model.init_from = os.path.abspath(os.path.expanduser(cfg.model.init_from))
    for t in cfg.tasks:
        t.data.path = sub(t.data.path)
        t.data.files = {k: sub(v) or v for k, v in t.data.files.items()}
        if t.data.format != "hf":
            t.data.name = sub(t.data.name)
    return cfg


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    cfg = _substitute(cfg)
    from mtfuse.plan import make_plan  # the plan step checks names, parameters and cross-field rules

    try:
        return make_plan(cfg).cfg
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply dotted overrides, validate everything (keys, method names, parameters)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{where}: not valid YAML ({what})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not valid UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    for o in overrides:
        apply_override(raw, o)
    return from_dict(raw, str(p))


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
