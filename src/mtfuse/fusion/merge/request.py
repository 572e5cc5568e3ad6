"""What a merge is made from, as one object: the runs, the method and its parameters, the base, per-model
weights, the seed, the distance guard and (``--search``) the search. ``mtfuse merge`` builds one from its
arguments; the driver writes it, resolved (the method's parameters with their defaults, the base the runs
descend from, absolute run paths), into ``merge.json`` under ``request``; ``mtfuse merge --from
DIR/merge.json`` reads it back and merges again, with identical weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from mtfuse import rundir
from mtfuse.errors import ConfigError, MtfuseError
from mtfuse.fusion.merge.method import MergeMethod, get_method
from mtfuse.params import Strict


class SearchSpec(Strict):
    """What ``--search`` tunes: ``space`` (parameter -> values; ``weights`` -> per-model weight lists), the
    split the points are scored on, and ``trials`` (a seeded random subset of the grid instead of all of it)."""

    space: dict[str, list[Any]]
    split: str = "dev"
    trials: int | None = Field(None, ge=1)


class MergeRequest(Strict):
    """One merge (or one search over merges) of ``runs`` with ``method``."""

    runs: list[Path] = Field(min_length=1)  # run directories whose encoders are merged
    method: str
    params: dict[str, Any] = Field(default_factory=dict)  # the method's parameters (key -> value)
    base: str | None = None  # the base (pretrained) model; None: the runs' model.name_or_path
    weights: list[float] | None = None  # one per run; None: equal
    seed: int = 0  # random methods (DARE, DELLA), Fisher's label sampling, random searches
    max_distance: float = Field(0.5, gt=0)  # refuse runs further than this (relative L2) from the base
    search: SearchSpec | None = None  # tune the parameters first (mtfuse.fusion.merge.search)

    @classmethod
    def make(cls, **fields: Any) -> MergeRequest:
        """Build a request; a bad field is a ConfigError naming it."""
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise ConfigError(_message(err, "merge request")) from None

    def merge_method(self) -> MergeMethod:
        return get_method(self.method)

    def resolved(self, base: str | None) -> MergeRequest:
        """The request as recorded: absolute run paths, the base actually used, and the method's parameters
        with their defaults (for a search, those of the parameters it does not search)."""
        params = self.merge_method().params(self.params).model_dump(mode="json")
        if self.search is not None:
            params = {k: v for k, v in params.items() if k in self.params or k not in self.search.space}
        return self.model_copy(
            update={"runs": [Path(r).resolve() for r in self.runs], "base": base, "params": params}
        )

    def record(self, base: str | None) -> dict[str, Any]:
        return self.resolved(base).model_dump(mode="json")


def _message(err: ValidationError, what: str) -> str:
    msgs = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            msgs.append(f"unknown field '{key}'")
        else:
            msgs.append(f"field '{key}': {e['msg']}" if key else e["msg"])
    return f"{what}: " + "; ".join(msgs)


def read_request(path: str | Path) -> MergeRequest:
    """The request recorded in a merge's ``merge.json`` (``path``: the file or its directory).

    A ``merge.json`` written before requests were recorded is read from its record fields."""
    path = Path(path)
    if path.is_dir():
        path = path / rundir.MERGE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MtfuseError(f"{path}: file not found (--from takes a merge output's {rundir.MERGE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtfuseError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise MtfuseError(f"{path}: expected a JSON object (a merge record)")
    raw = record.get("request")
    if raw is None:  # an older merge.json: rebuild the request from the record
        if "method" not in record or "inputs" not in record:
            raise MtfuseError(f"{path}: not a merge record (no 'request', 'method' or 'inputs')")
        raw = {
            "runs": [i["run_dir"] for i in record["inputs"]],
            "method": record["method"],
            "params": record.get("params") or {},
            "base": record.get("base"),
            "weights": record.get("weights"),
            "seed": record.get("seed", 0),
        }
    try:
        return MergeRequest.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_message(err, f"{path} (field 'request')")) from None


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` merge parameters (values parsed as YAML: numbers, lists, booleans)."""
    out: dict[str, Any] = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k.strip()] = yaml.safe_load(v)
    return out
