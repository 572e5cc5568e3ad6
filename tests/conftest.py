"""Shared fixtures: a tiny random BERT with the real MiniLM tokenizer, and the shared data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers.multilingual import build_tiny_mbert, build_tiny_xlmr
from tests.helpers.seq2seq import build_tiny_bart, build_tiny_other, build_tiny_t5
from tests.helpers.tiny import build_tiny_bert


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with a 2-layer, hidden-32 random BERT (seed 0) and MiniLM's real fast tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A 2-layer, hidden-32 random XLM-RoBERTa with a SentencePiece (Unigram) tokenizer trained on English and
    German shared data (``tests.helpers.multilingual``)."""
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny_xlmr"), shared_data_dir)


@pytest.fixture(scope="session")
def tiny_mbert_dir(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A 2-layer, hidden-32 random BERT with a cased WordPiece tokenizer trained on English and German shared
    data, as multilingual BERT (``tests.helpers.multilingual``)."""
    return build_tiny_mbert(tmp_path_factory.mktemp("tiny_mbert"), shared_data_dir)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A 2-layer, d_model-32 random T5 (``T5ForConditionalGeneration``) with a Unigram tokenizer trained on
    English and German shared data (``tests.helpers.seq2seq``)."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"), shared_data_dir)


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A 2-layer, d_model-32 random BART (``BartForConditionalGeneration``) with a byte-level BPE tokenizer
    trained on English and German shared data (``tests.helpers.seq2seq``)."""
    return build_tiny_bart(tmp_path_factory.mktemp("tiny_bart"), shared_data_dir)


@pytest.fixture(scope="session")
def tiny_other_seq2seq_dirs(
    tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path
) -> dict[str, Path]:
    """Tiny random mBART, Marian and Pegasus checkpoints with a byte-level BPE tokenizer trained here."""
    return {
        kind: build_tiny_other(kind, tmp_path_factory.mktemp(f"tiny_{kind}"), shared_data_dir)
        for kind in ("mbart", "marian", "pegasus")
    }


@pytest.fixture
def cli_config(tmp_path: Path, tiny_model_dir: Path, shared_data_dir: Path):
    """Write a config text to ``tmp_path``; return it with the overrides that point it at the tiny model, the
    shared data and a private tokenisation cache: ``path, common = cli_config(TEXT)``."""

    def make(text: str, name: str = "cfg.yaml") -> tuple[Path, list[str]]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        common = [
            f"model.name_or_path={tiny_model_dir}",
            f"data_dir={shared_data_dir}",
            f"cache_dir={tmp_path / 'cache'}",
        ]
        return path, common

    return make


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The project's shared data folder (``shared/data`` beside the checkout); skips the test if absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found")
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on busy shared cores: one intra-op thread avoids thread hand-off costs 100x the work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
