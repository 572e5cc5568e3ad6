"""Data readers: the real GLUE / CoNLL-2003 files (counts, fields) and every input error on small files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtfuse.config import DataConfig
from mtfuse.errors import ConfigError, DataError
from mtfuse.tasks.readers import READERS, Reader, read_split
from tests.helpers.cli import write

DATA = Path(__file__).parents[2].parent / "shared" / "data"
GLUE = DATA / "glue"
CONLL = DATA / "conll2003"

needs_data = pytest.mark.skipif(not (GLUE.is_dir() and CONLL.is_dir()), reason="no ../shared/data")

GLUE_COUNTS = {
    "CoLA": {"train": 8551, "dev": 1043},
    "SST-2": {"train": 67349, "dev": 872},
    "MRPC": {"train": 3668, "dev": 408},
    "RTE": {"train": 2490, "dev": 277},
    "WNLI": {"train": 635, "dev": 71},
    "STS-B": {"train": 5749, "dev": 1500, "test": 1379},
}
PAIR = ["sentence1", "sentence2"]


def glue(task: str, path: Path | None = None, **kw: object) -> DataConfig:
    return DataConfig(format="glue", path=str(path or GLUE / task), task=task, **kw)


@pytest.fixture(scope="module")
def glue_rows() -> dict[tuple[str, str], list[dict]]:
    """Every real GLUE split, parsed once for the whole module."""
    if not GLUE.is_dir():
        pytest.skip("no ../shared/data")
    return {(t, s): read_split(glue(t), s) for t, counts in GLUE_COUNTS.items() for s in counts}


@pytest.fixture(scope="module")
def conll_rows() -> dict[str, list[dict]]:
    if not CONLL.is_dir():
        pytest.skip("no ../shared/data")
    data = DataConfig(format="conll", path=str(CONLL))
    return {s: read_split(data, s) for s in ("train", "dev", "test")}


def test_registered_formats() -> None:
    assert READERS.names() == [
        "atis",
        "conll",
        "conllu_srl",
        "copa",
        "csv",
        "dailydialog",
        "glue",
        "hf",
        "jsonl",
        "lines",
        "parallel",
        "parquet",
        "squad",
        "tsv",
    ]
    assert all(isinstance(READERS.get(n), Reader) for n in READERS)


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown data format 'xml'; choose from"):
        read_split(DataConfig(format="xml", path="."), "train")


# ------------------------------------------------------------------------------------------ real GLUE


@needs_data
@pytest.mark.parametrize("task", list(GLUE_COUNTS))
def test_glue_row_counts_and_fields(task: str, glue_rows: dict) -> None:
    reader = READERS.get("glue")
    assert reader.splits(glue(task)) == list(GLUE_COUNTS[task])
    text_fields, label = reader.defaults(glue(task))
    assert label == "label"
    assert text_fields == (["sentence"] if task in ("CoLA", "SST-2") else PAIR)
    for split, count in GLUE_COUNTS[task].items():
        rows = glue_rows[task, split]
        assert len(rows) == count
        assert all(set(r) == {*text_fields, "label", "_where"} for r in rows)
        assert all(isinstance(r[f], str) and r[f] for r in rows for f in text_fields)


@needs_data
def test_cola_first_dev_row(glue_rows: dict) -> None:
    assert glue_rows["CoLA", "dev"][0] == {
        "sentence": "The sailors rode the breeze clear of the rocks.",
        "label": "1",
        "_where": f"{GLUE / 'CoLA' / 'dev.tsv'}:1",  # no header: the first row is line 1
    }
    assert {r["label"] for r in glue_rows["CoLA", "train"]} == {"0", "1"}


@needs_data
def test_sst2_header_is_line_one(glue_rows: dict) -> None:
    first = glue_rows["SST-2", "train"][0]
    assert first["sentence"].startswith("hide new secretions")
    assert first["_where"].endswith("SST-2/train.tsv:2")
    assert {r["label"] for r in glue_rows["SST-2", "dev"]} == {"0", "1"}


@needs_data
def test_mrpc_bom_and_literal_quotes(glue_rows: dict) -> None:
    assert {r["label"] for s in ("train", "dev") for r in glue_rows["MRPC", s]} == {"0", "1"}
    first = glue_rows["MRPC", "dev"][0]
    # An unbalanced quote that CSV quoting would have swallowed up to the next quote character.
    assert first["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert first["_where"].endswith("MRPC/dev.tsv:2")


@needs_data
def test_rte_and_wnli_labels(glue_rows: dict) -> None:
    for split in ("train", "dev"):
        assert {r["label"] for r in glue_rows["RTE", split]} == {"entailment", "not_entailment"}
        assert {r["label"] for r in glue_rows["WNLI", split]} == {"0", "1"}


@needs_data
def test_stsb_scores_and_extra_columns(glue_rows: dict) -> None:
    for split in ("train", "dev", "test"):
        scores = [float(r["label"]) for r in glue_rows["STS-B", split]]
        assert all(0.0 <= s <= 5.0 for s in scores)
    first = glue_rows["STS-B", "dev"][0]
    assert first["sentence1"] == "A man with a hard hat is dancing."
    assert first["label"] == "5.000"
    # line 5553 is the first with 2 trailing source columns ("Europe Media Monitor (http://...)"): ignored
    row = glue_rows["STS-B", "train"][5552]
    assert row["_where"].endswith("STS-B/sts-train.csv:5553")
    assert row["sentence2"] == "Driver backs into mom, stroller with child then drives off"
    assert not any(
        r["sentence2"].startswith(("Europe Media", "StackExchange")) for r in glue_rows["STS-B", "train"]
    )


@needs_data
@pytest.mark.parametrize("name", ["sst2", "SST-2", "sst-2", "Sst_2"])
def test_glue_task_name_spellings(name: str) -> None:
    assert READERS.get("glue").splits(glue(name, GLUE / "SST-2")) == ["train", "dev"]


@needs_data
def test_glue_task_defaults_to_directory_name() -> None:
    data = DataConfig(format="glue", path=str(GLUE / "STS-B"))
    assert READERS.get("glue").splits(data) == ["train", "dev", "test"]


@needs_data
def test_glue_missing_split() -> None:
    with pytest.raises(
        DataError, match=r"split 'test' not found for task dir .*RTE; available: \['train', 'dev'\]"
    ):
        read_split(glue("RTE"), "test")


# ------------------------------------------------------------------------------------------ real CoNLL


@needs_data
def test_conll_sentence_counts(conll_rows: dict) -> None:
    assert {s: len(r) for s, r in conll_rows.items()} == {"train": 14041, "dev": 3250, "test": 3453}
    assert READERS.get("conll").defaults(DataConfig(format="conll", path=str(CONLL))) == (["tokens"], "tags")
    tags = {t for rows in conll_rows.values() for r in rows for t in r["tags"]}
    assert tags == {"O"} | {f"{p}-{e}" for p in "BI" for e in ("PER", "ORG", "LOC", "MISC")}
    assert all(len(r["tokens"]) == len(r["tags"]) for rows in conll_rows.values() for r in rows)


@needs_data
def test_conll_first_sentence(conll_rows: dict) -> None:
    first = conll_rows["train"][0]
    assert first["tokens"][:3] == ["EU", "rejects", "German"]
    assert first["tags"][:3] == ["B-ORG", "O", "B-MISC"]
    assert first["_where"] == f"{CONLL / 'train.txt'}:3"  # after -DOCSTART- and a blank line
    assert not any("-DOCSTART-" in r["tokens"] for r in conll_rows["train"])


# ------------------------------------------------------------------------------------ GLUE input errors


def rte_dir(tmp_path: Path, dev: str | bytes) -> Path:
    write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    write(tmp_path / "RTE" / "dev.tsv", dev)
    return tmp_path / "RTE"


def test_glue_quotes_and_bom_on_small_files(tmp_path: Path) -> None:
    folder = tmp_path / "MRPC"
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(folder / "train.tsv", header + '1\t1\t2\t"He said\tshe said "yes\n\n0\t3\t4\tx\ty\r\n')
    rows = read_split(glue("mrpc", folder), "train")
    assert rows == [
        {
            "sentence1": '"He said',
            "sentence2": 'she said "yes',
            "label": "1",
            "_where": f"{folder}/train.tsv:2",
        },
        {"sentence1": "x", "sentence2": "y", "label": "0", "_where": f"{folder}/train.tsv:4"},
    ]
    assert READERS.get("glue").splits(glue("MRPC", folder)) == ["train"]


def test_glue_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data directory not found: .*nowhere"):
        read_split(glue("RTE", tmp_path / "nowhere"), "train")


def test_glue_no_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no RTE data files \(train.tsv, dev.tsv\) in task dir"):
        READERS.get("glue").splits(glue("RTE", tmp_path))


def test_glue_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown GLUE task 'QQQ' .*choose from \[CoLA, SST-2"):
        read_split(glue("QQQ", tmp_path), "train")


def test_glue_missing_column(tmp_path: Path) -> None:
    folder = rte_dir(tmp_path, "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"RTE/dev.tsv:1: missing column 'label'; the header has columns \["):
        read_split(glue("RTE", folder), "dev")


def test_glue_too_few_fields(tmp_path: Path) -> None:
    folder = rte_dir(
        tmp_path, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta b\tentailment\n"
    )
    with pytest.raises(DataError, match=r"RTE/dev.tsv:3: row has 3 tab-separated fields, expected 4"):
        read_split(glue("RTE", folder), "dev")


def test_glue_headerless_field_count(tmp_path: Path) -> None:
    write(tmp_path / "STS-B" / "sts-dev.csv", "g\tf\ty\t1\t2.5\ta\tb\n" + "g\tf\t2.5\ta\tb\n")
    with pytest.raises(DataError, match=r"sts-dev.csv:2: row has 5 tab-separated fields, expected 7 or 9$"):
        read_split(glue("stsb", tmp_path / "STS-B"), "dev")


def test_glue_undecodable_bytes(tmp_path: Path) -> None:
    folder = rte_dir(tmp_path, b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tx\n1\tcaf\xe9\tb\tx\n")
    with pytest.raises(DataError, match=r"RTE/dev.tsv:3: not valid UTF-8 \(byte 0xe9\)"):
        read_split(glue("RTE", folder), "dev")


@pytest.mark.parametrize("dev", ["index\tsentence1\tsentence2\tlabel\n", "", "\n\n"])
def test_glue_empty_split(tmp_path: Path, dev: str) -> None:
    folder = rte_dir(tmp_path, dev)
    with pytest.raises(DataError, match=r"RTE/dev.tsv: no rows"):
        read_split(glue("RTE", folder), "dev")


def test_glue_needs_path() -> None:
    with pytest.raises(ConfigError, match="data.path must name the GLUE task directory"):
        read_split(DataConfig(format="glue", task="RTE"), "train")


# ----------------------------------------------------------------------------------- CoNLL input errors

CONLL_TEXT = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n"


def test_conll_small_file(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", CONLL_TEXT)
    write(tmp_path / "valid.txt", "a B-X\n-DOCSTART- O\nb O\n")  # 2 columns; DOCSTART ends a sentence
    data = DataConfig(format="conll", path=str(tmp_path))
    assert READERS.get("conll").splits(data) == ["train", "dev"]
    assert read_split(data, "train") == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"], "_where": f"{tmp_path}/train.txt:3"},
        {"tokens": ["Peter"], "tags": ["B-PER"], "_where": f"{tmp_path}/train.txt:7"},
    ]
    assert [r["tokens"] for r in read_split(data, "dev")] == [["a"], ["b"]]


def test_conll_files_override(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", CONLL_TEXT)
    write(tmp_path / "other" / "eval.conll", "x O\n")
    data = DataConfig(format="conll", path=str(tmp_path), files={"test": "other/eval.conll"})
    # data.files lists every split: the train.txt beside it is not picked up behind the user's back
    assert READERS.get("conll").splits(data) == ["test"]
    assert read_split(data, "test")[0]["_where"] == f"{tmp_path}/other/eval.conll:1"
    with pytest.raises(DataError, match=r"split 'train' not found .*data.files lists every split"):
        read_split(data, "train")


def test_conll_wrong_column_count(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", CONLL_TEXT + "Blackburn NNP I-PER\n")
    with pytest.raises(DataError, match=r"train.txt:8: 3 columns, but the file's first token line has 4"):
        read_split(DataConfig(format="conll", path=str(tmp_path)), "train")


def test_conll_one_column(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "\nEU\n")
    with pytest.raises(DataError, match=r"train.txt:2: expected at least 2 columns"):
        read_split(DataConfig(format="conll", path=str(tmp_path)), "train")


def test_conll_missing_file_and_split(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", CONLL_TEXT)
    data = DataConfig(format="conll", path=str(tmp_path), files={"train": "train.txt", "dev": "nope.txt"})
    with pytest.raises(DataError, match=r"file not found: .*nope.txt"):
        read_split(data, "dev")
    with pytest.raises(DataError, match=r"split 'test' not found .*available: \['train', 'dev'\]"):
        read_split(data, "test")


def test_conll_empty(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(DataError, match="train.txt: no rows"):
        read_split(DataConfig(format="conll", path=str(tmp_path)), "train")


# ------------------------------------------------------------------------------- csv / tsv / jsonl / parquet


def test_csv_quoting_and_line_numbers(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", 'text,label\n"a, ""quoted""\nline",pos\n\nplain,neg\n')
    rows = read_split(DataConfig(format="csv", path=str(tmp_path)), "train")
    assert rows == [
        {"text": 'a, "quoted"\nline', "label": "pos", "_where": f"{tmp_path}/train.csv:2"},
        {"text": "plain", "label": "neg", "_where": f"{tmp_path}/train.csv:5"},
    ]
    assert READERS.get("csv").defaults(DataConfig(format="csv", path=str(tmp_path))) == (None, None)


def test_csv_files_relative_to_path(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.csv", "x,y\n1,2\n")
    write(tmp_path / "b.csv", "x,y\n3,4\n")
    data = DataConfig(
        format="csv", path=str(tmp_path / "d"), files={"train": "a.csv", "dev": str(tmp_path / "b.csv")}
    )
    assert READERS.get("csv").splits(data) == ["train", "dev"]
    assert read_split(data, "train")[0]["x"] == "1"
    assert read_split(data, "dev")[0]["y"] == "4"


def test_csv_too_few_fields(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text,label\nok,1\nbroken\n")
    with pytest.raises(DataError, match=r"train.csv:3: too few fields \(1\) for the header's 2 columns"):
        read_split(DataConfig(format="csv", path=str(tmp_path)), "train")


def test_csv_errors(tmp_path: Path) -> None:
    data = DataConfig(format="csv", files={"train": str(tmp_path / "missing.csv")})
    with pytest.raises(DataError, match="file not found: .*missing.csv"):
        read_split(data, "train")
    write(tmp_path / "empty.csv", "text,label\n")
    with pytest.raises(DataError, match="empty.csv: no rows"):
        read_split(DataConfig(format="csv", files={"train": str(tmp_path / "empty.csv")}), "train")
    write(tmp_path / "dup.csv", "a,a\n1,2\n")
    with pytest.raises(DataError, match=r"dup.csv:1: duplicate column names \['a'\]"):
        read_split(DataConfig(format="csv", files={"train": str(tmp_path / "dup.csv")}), "train")
    write(tmp_path / "bad.csv", b"a,b\n1,2\n\xff,3\n")
    with pytest.raises(DataError, match="bad.csv:3: not valid UTF-8"):
        read_split(DataConfig(format="csv", files={"train": str(tmp_path / "bad.csv")}), "train")


def test_generic_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.files key 'validation' is not a split"):
        read_split(DataConfig(format="jsonl", files={"validation": "v.jsonl"}), "dev")
    with pytest.raises(ConfigError, match="format 'tsv' needs data.files"):
        read_split(DataConfig(format="tsv", path=str(tmp_path)), "train")


def test_tsv_keeps_quotes(tmp_path: Path) -> None:
    write(tmp_path / "t.tsv", 'q\tlabel\n"open quote\t1\n')
    rows = read_split(DataConfig(format="tsv", files={"test": str(tmp_path / "t.tsv")}), "test")
    assert rows == [{"q": '"open quote', "label": "1", "_where": f"{tmp_path}/t.tsv:2"}]
    with pytest.raises(DataError, match=r"split 'train' not found for format 'tsv'.*available: \['test'\]"):
        read_split(DataConfig(format="tsv", files={"test": str(tmp_path / "t.tsv")}), "train")


def test_tsv_too_many_fields(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "q\tlabel\na\tb\tc\n")
    with pytest.raises(DataError, match=r"train.tsv:2: too many fields \(3\)"):
        read_split(DataConfig(format="tsv", path=str(tmp_path)), "train")


def test_jsonl(tmp_path: Path) -> None:
    write(tmp_path / "dev.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n')
    rows = read_split(DataConfig(format="jsonl", path=str(tmp_path)), "dev")
    assert rows == [
        {"text": "a", "label": 1, "_where": f"{tmp_path}/dev.jsonl:1"},
        {"text": "b", "label": 0, "_where": f"{tmp_path}/dev.jsonl:3"},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}\n{"a": \n', r"dev.jsonl:2: invalid JSON"),
        ('{"a": 1}\n[1, 2]\n', r"dev.jsonl:2: expected a JSON object, got list"),
        ("\n\n", r"dev.jsonl: no rows"),
    ],
)
def test_jsonl_errors(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "dev.jsonl", text)
    with pytest.raises(DataError, match=message):
        read_split(DataConfig(format="jsonl", path=str(tmp_path)), "dev")


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": [1, 0]}), tmp_path / "train.parquet")
    rows = read_split(DataConfig(format="parquet", path=str(tmp_path)), "train")
    assert rows[1] == {"text": "b", "label": 0, "_where": f"{tmp_path}/train.parquet:2"}
    write(tmp_path / "dev.parquet", "not parquet")
    with pytest.raises(DataError, match="dev.parquet: not a readable parquet file"):
        read_split(DataConfig(format="parquet", path=str(tmp_path)), "dev")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "test.parquet")
    with pytest.raises(DataError, match="test.parquet: no rows"):
        read_split(DataConfig(format="parquet", path=str(tmp_path)), "test")


# ---------------------------------------------------------------------------------------- Hugging Face


def test_hf_save_to_disk(tmp_path: Path) -> None:
    import datasets

    train = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    dev = datasets.Dataset.from_dict({"text": ["d"], "label": [1]})
    datasets.DatasetDict({"train": train, "validation": dev}).save_to_disk(str(tmp_path / "ds"))
    data = DataConfig(format="hf", name=str(tmp_path / "ds"))
    assert READERS.get("hf").splits(data) == ["train", "dev"]
    assert read_split(data, "dev") == [{"text": "d", "label": 1, "_where": f"{tmp_path}/ds[validation]:0"}]
    assert len(read_split(data, "train")) == 3
    with pytest.raises(
        DataError, match=r"split 'test' not found for hf dataset .*available: \['train', 'dev'\]"
    ):
        read_split(data, "test")
    mapped = DataConfig(format="hf", name=str(tmp_path / "ds"), splits={"test": "validation"})
    assert READERS.get("hf").splits(mapped) == ["train", "dev", "test"]
    assert read_split(mapped, "test")[0]["text"] == "d"


def test_hf_single_dataset_is_train(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "one"))
    data = DataConfig(format="hf", name=str(tmp_path / "one"))
    assert READERS.get("hf").splits(data) == ["train"]
    assert read_split(data, "train")[1] == {"x": 2, "_where": f"{tmp_path}/one[train]:1"}


def test_hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import time
    data = DataConfig(format="hf", name="mtfuse-test/no-such-dataset-xyz")
    with pytest.raises(DataError, match=r"could not be downloaded \(offline\?.*local copy.*csv / jsonl"):
        read_split(data, "train")


def test_hf_needs_name() -> None:
    with pytest.raises(ConfigError, match="format 'hf' needs data.name"):
        read_split(DataConfig(format="hf"), "train")
