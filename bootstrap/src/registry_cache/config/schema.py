"""config.yml's JSON Schema and the wording of what it finds: `must be a whole number, not 'x'`."""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from typing import Any

from registry_cache.config.document import Document, KeyPath, dig, is_int

# Keys whose values are secrets: never echoed in a message.
SECRET_KEYS = frozenset({"password", "bcrypt"})

_TYPE_WORDS = {
    "object": "a mapping of keys",
    "string": "a string",
    "integer": "a whole number",
    "array": "a list",
    "boolean": "true or false",
}


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema of config.yml shipped with the package."""
    text = resources.files("registry_cache").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


def check_schema(doc: Document, data: dict[str, Any]) -> None:
    """Report to `doc` every way `data` breaks the schema, each in the user's words."""
    for error in _validator_class()(load_schema()).iter_errors(data):
        _report(doc, data, error)


@functools.cache
def _validator_class() -> Any:
    """Draft 7, but an integer is an int as written: YAML's 5001.0 is a float, not a port."""
    import jsonschema

    checker = jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", lambda _c, value: is_int(value))
    return jsonschema.validators.extend(jsonschema.Draft7Validator, type_checker=checker)


def _report(doc: Document, data: dict[str, Any], error: Any) -> None:
    path: KeyPath = tuple(str(p) for p in error.absolute_path)
    kind = error.validator
    secret = bool(path) and path[-1] in SECRET_KEYS
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        for key in sorted(set(error.instance) - set(known)):
            doc.add((*path, str(key)), "unknown key" + _did_you_mean(str(key), known))
    elif kind == "required":
        for key in error.validator_value:
            if key not in error.instance:
                described = error.schema["properties"][key].get("description", "")
                doc.add((*path, key), f"missing; add it. {described}".strip())
    elif kind == "type":
        got = "" if secret else f", not {_describe(error.instance)}"
        types = error.validator_value
        types = types if isinstance(types, list) else [types]
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        doc.add(path, f"must be {wanted}{got}")
    elif kind in ("minimum", "maximum"):
        low = error.schema.get("minimum")
        high = error.schema.get("maximum")
        doc.add(path, f"{error.instance} is out of range; use a number from {low} to {high}")
    elif kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value if not isinstance(c, bool))
        doc.add(path, f"{_describe(error.instance)} is not allowed; use one of: {choices}")
    elif kind == "minLength":
        doc.add(path, "must not be empty")
    elif kind == "minProperties":
        doc.add(path, "defines no mirror; add one, e.g. 'dockerhub: {upstream: "
                "https://registry-1.docker.io, port: 5000}'")
    elif kind == "pattern" and isinstance(error.instance, str) and path and \
            isinstance(dig(data, *path), dict) and error.instance in dig(data, *path):
        doc.add(
            (*path, error.instance),
            "a mirror name must be 1-32 lower-case letters, digits or dashes "
            "(it names a systemd unit and a cache folder), e.g. 'docker-hub'",
        )
    else:
        doc.add(path, "is not valid" if secret else error.message)


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; allowed here: " + ", ".join(known)


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)
