"""Format ``hf``: a Hugging Face ``datasets`` dataset: a hub name, a ``save_to_disk`` directory or a local
data directory (``data.name``), with ``data.config_name`` and ``data.splits`` mapping mtfuse's splits to the
dataset's (default train, validation, test). Rows are the dataset's rows unchanged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.readers.base import READERS, SPLITS, Reader, Row, no_rows

_HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@lru_cache(maxsize=8)
def _load_hf(name: str, config_name: str | None) -> dict[str, Any]:
    """source split -> ``datasets.Dataset``, from a ``save_to_disk`` directory or ``load_dataset``."""
    import datasets

    local = Path(name).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(name, config_name)
    except ConnectionError as e:  # also what offline mode raises
        raise DataError(
            f"hf dataset '{name}' could not be downloaded (offline? {e}); download it elsewhere and point "
            f"data.name at a local copy (save_to_disk directory), or use the csv / jsonl / parquet readers"
        ) from None
    except FileNotFoundError as e:  # datasets' DatasetNotFoundError is one
        raise DataError(
            f"hf dataset '{name}' not found (not a local directory, and not on the hub or could not be "
            f"downloaded): {e}"
        ) from None
    except Exception as e:  # a bad config name, a corrupt directory...: report without a traceback
        raise DataError(f"hf dataset '{name}' could not be loaded: {type(e).__name__}: {e}") from None
    if isinstance(loaded, datasets.Dataset):  # a single saved Dataset: its only split is train
        return {"train": loaded}
    return dict(loaded)


class HfReader(Reader):
    """A Hugging Face dataset: ``data.name`` (hub name or local directory), ``data.config_name``, and
    ``data.splits`` (split -> source split; default train, validation, test). ``_where`` is
    ``name[source split]:index`` (0-based). Rows are the dataset's rows unchanged (class labels stay ints)."""

    format = "hf"

    def _name(self, data: DataConfig) -> str:
        if not data.name:
            raise ConfigError("format 'hf' needs data.name (a hub dataset name or a local directory)")
        return data.name

    def _sources(self, data: DataConfig) -> dict[str, str]:
        """mtfuse split -> source split, for the splits the dataset has."""
        name = self._name(data)
        unknown = [k for k in data.splits if k not in SPLITS]
        if unknown:
            raise ConfigError(f"data.splits key '{unknown[0]}' is not a split; use {', '.join(SPLITS)}")
        wanted = {**_HF_SPLITS, **data.splits}
        present = _load_hf(name, data.config_name)
        return {s: wanted[s] for s in SPLITS if wanted[s] in present}

    def splits(self, data: DataConfig) -> list[str]:
        return list(self._sources(data))

    def read(self, data: DataConfig, split: str) -> list[Row]:
        name, sources = self._name(data), self._sources(data)
        if split not in sources:
            present = list(_load_hf(name, data.config_name))
            raise DataError(
                f"split '{split}' not found for hf dataset '{name}'; available: {list(sources)} "
                f"(the dataset's splits: {present}; map them with data.splits)"
            )
        source = sources[split]
        rows = _load_hf(name, data.config_name)[source].to_list()
        for index, row in enumerate(rows):
            row["_where"] = f"{name}[{source}]:{index}"
        if not rows:
            raise no_rows(f"{name}[{source}]")
        return rows


READERS.register("hf")(HfReader())
