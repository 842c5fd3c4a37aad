"""The one YAML loading rule of every Vigil config (daemon, training, benchmarks): safe tags only,
and no key given twice in a mapping.

PyYAML's `safe_load` accepts `model:` twice and silently keeps the later one, so a config edited
by two people (a second `model:` section, a camera with two `url:` lines) runs something nobody
reviewed. `UniqueKeyLoader` refuses it with the line of both occurrences.

Lives in `detector/` because both `train/` and `streamer/` import from here and `detector/`
imports neither.
"""
from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError

# A key is quoted in the message only when it is plainly a name: a duplicate key could be a URL
# that holds a password.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class DuplicateKeyError(ConstructorError):
    """A mapping gives the same key twice. A `yaml.MarkedYAMLError`: `problem_mark` is the second
    occurrence (0-based line and column), the message names the first one's line (1-based)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that raises `DuplicateKeyError` for a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue        # `<<:` merges are resolved by flatten_mapping
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:   # unhashable: construct_mapping reports it
                    continue
                if first is not None:
                    what = (f"duplicate key {key!r}"
                            if isinstance(key, str) and _PLAIN_KEY.fullmatch(key)
                            else "a duplicate key")
                    raise DuplicateKeyError(
                        "while constructing a mapping", node.start_mark,
                        f"found {what} (first given at line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """`yaml.safe_load` that refuses duplicate keys.

    Args:
        text: YAML text.
    Returns:
        The loaded value (None for an empty document).
    Raises:
        yaml.YAMLError: invalid YAML; `DuplicateKeyError` for a repeated key.
    """
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
