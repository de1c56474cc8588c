"""Reading compose files as compose does: its ``!reset`` and ``!override`` tags."""

from __future__ import annotations

import yaml


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags (their value is read as plain YAML)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    """``!reset VALUE`` / ``!override VALUE``: the attribute becomes VALUE, not a merge with earlier files."""
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!reset", _tagged)
ComposeLoader.add_constructor("!override", _tagged)


def load(text: str) -> dict:
    return yaml.load(text, Loader=ComposeLoader)
