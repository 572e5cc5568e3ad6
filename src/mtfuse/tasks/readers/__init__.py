"""Data readers: turn one split of a task's data (``DataConfig``) into a list of plain row dicts.

One reader instance is registered per ``data.format`` in :data:`READERS`, one module per format:

* ``glue`` (:mod:`.glue`): the directory of one GLUE task in the standard download layout (CoLA, SST-2,
  MRPC, RTE, WNLI, STS-B); rows get canonical fields (``sentence`` or ``sentence1``/``sentence2``, and
  ``label``), labels stay strings as in the file.
* ``conll`` (:mod:`.conll`): CoNLL-2003 style token-per-line files; rows are ``{"tokens": [...], "tags": [...]}``.
* ``atis`` (:mod:`.atis`): a folder per split with ``seq.in`` / ``seq.out`` / ``label`` aligned line by line
  (ATIS, SNIPS); rows are ``{"tokens": [...], "label": {"intent": ..., "slots": [...]}}`` (type ``intent_slots``).
* ``copa`` (:mod:`.copa`): the COPA XML; rows are ``{"context", "choices": [a1, a2], "label": 0 | 1, ...}``
  (the context ends with the cause / effect question); no train split (map one with ``data.files``).
* ``conllu_srl`` (:mod:`.conllu_srl`): CoNLL-U + PropBank columns (dependency SRL); one row per predicate,
  ``{"words", "predicate", "roleset", "roles", ...}``.
* ``squad`` (:mod:`.squad`): SQuAD v1.1 JSON; rows are ``{"question", "context", "answers": [{text,
  answer_start}], "id", "title"}``; ``data.split_by_article`` splits one file into train / dev / test by article.
* ``csv``, ``tsv`` (:mod:`.delimited`), ``jsonl`` (:mod:`.jsonl`), ``parquet`` (:mod:`.parquet`): generic
  files; rows keep the file's column names (csv / tsv without a header row: ``header: false`` and
  ``columns``; ``delimiter``, ``quoting``, ``encoding``).
* ``lines`` (:mod:`.lines`): one example a line: the line is the field ``text``, or ``pattern`` (a regular
  expression with named groups) splits it into fields (``LABEL text`` lines), or ``field_files`` gives one
  file per field, aligned line by line (text and labels in separate files).
* ``parallel`` (:mod:`.parallel`): two aligned line files per split (source / target), gzip allowed
  (Multi30k); ``dailydialog`` (:mod:`.dailydialog`): ``__eou__``-separated dialogues as context -> response
  pairs. jsonl rows may hold lists (SciTLDR: the source sentences, the target references).
* ``hf`` (:mod:`.hf`): a Hugging Face ``datasets`` dataset (hub name, ``save_to_disk`` directory or local
  data directory).

Every row also carries ``"_where"``, a location such as ``glue/RTE/dev.tsv:17`` (1-based line in the file, a
header counting as line 1) that later code quotes in its error messages. Readers only parse: they do not
validate labels or check that a task's text fields exist (except where a format fixes its own columns).
Every problem with the input is raised as :class:`~mtfuse.errors.DataError` (or ``ConfigError`` for a bad
config value) naming the file and line. Only regular files are read (a FIFO or a device would block or never
end). When ``data.files`` is given it lists every split: default file names are then not looked for.

Label ids -> names (``data.label_map``) and a dev split carved out of train (``data.dev_from_train``) need the
task's label field, so :mod:`mtfuse.tasks.prepare` applies them (with :func:`label_map` and
:func:`carve_dev`, in :mod:`.base` with the registry and the shared helpers).

Importing this package imports every format module, which registers its reader.
"""

from __future__ import annotations

from mtfuse.tasks.readers import (  # generation data
    atis,
    conll,
    conllu_srl,
    copa,
    dailydialog,
    delimited,
    glue,
    hf,
    jsonl,
    lines,
    parallel,
    parquet,
    squad,
)
from mtfuse.tasks.readers.atis import AtisReader
from mtfuse.tasks.readers.base import (
    BOM,
    READERS,
    SPLITS,
    FileReader,
    Reader,
    Row,
    apply_label_map,
    carve_dev,
    label_map,
    read_split,
)
from mtfuse.tasks.readers.conll import ConllReader
from mtfuse.tasks.readers.conllu_srl import ConlluSrlReader
from mtfuse.tasks.readers.copa import CopaReader
from mtfuse.tasks.readers.glue import GLUE_TASKS, GlueReader, glue_task
from mtfuse.tasks.readers.hf import HfReader
from mtfuse.tasks.readers.lines import LinesReader
from mtfuse.tasks.readers.squad import SquadReader

__all__ = [
    "BOM",
    "GLUE_TASKS",
    "READERS",
    "SPLITS",
    "AtisReader",
    "ConllReader",
    "ConlluSrlReader",
    "CopaReader",
    "FileReader",
    "GlueReader",
    "HfReader",
    "LinesReader",
    "Reader",
    "Row",
    "SquadReader",
    "apply_label_map",
    "atis",
    "carve_dev",
    "conll",
    "copa",
    "dailydialog",
    "conllu_srl",
    "delimited",
    "glue",
    "glue_task",
    "hf",
    "jsonl",
    "label_map",
    "lines",
    "parallel",
    "parquet",
    "read_split",
    "squad",
]
