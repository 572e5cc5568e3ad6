"""The strict pydantic base of every parameter model, and the check of a method's parameters.

At the bottom of the import graph: registries' entries (samplers, weightings, sharing methods, merge methods)
declare ``Params(Strict)`` and import nothing else from mtfuse's configuration.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mtfuse.errors import ConfigError


class Strict(BaseModel):
    """A parameter model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


def params_check(cls: Any, section: BaseModel, name: str) -> BaseModel:
    """Validate a method's hyperparameters (the extra keys of its section) against ``cls.Params``."""
    extra = dict(section.model_extra or {})
    params_model = getattr(cls, "Params", None)
    if params_model is None:
        if extra:
            key = f"{name}.{sorted(extra)[0]}"
            method = getattr(section, "method", name)
            raise ConfigError(f"unknown config key '{key}': {name} method '{method}' takes no parameters")
        return Strict()
    try:
        return params_model.model_validate(extra)
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                valid = sorted(params_model.model_fields) + ["method"]
                msgs.append(f"unknown config key '{name}.{key}'; choose from [{', '.join(valid)}]")
            else:
                msgs.append(f"config key '{name}.{key}': {e['msg']}")
        raise ConfigError("; ".join(msgs)) from None
