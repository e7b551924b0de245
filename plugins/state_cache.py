"""Models built from states, cached: the torch plugins turn a flat state dict into a network on a
device, which is slow to repeat for every call of one generation (generate, score, metrics)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping


class StateModelCache:
    """A small LRU of ``(state, extra key) -> model``.

    A hit needs the very same state object with the very same arrays: holding the state keeps its
    id unique while cached, and the ids of its arrays catch a dict whose values were replaced.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: "OrderedDict[tuple, tuple[Mapping, tuple, Any]]" = OrderedDict()

    def get(self, state: Mapping[str, Any], key: Hashable, build: Callable[[], Any]) -> Any:
        full = (id(state), key)
        array_ids = tuple((k, id(v)) for k, v in state.items())
        hit = self._items.get(full)
        if hit is not None and hit[0] is state and hit[1] == array_ids:
            self._items.move_to_end(full)
            return hit[2]
        self._items.pop(full, None)
        while len(self._items) >= self.size:
            self._items.popitem(last=False)
        model = build()
        self._items[full] = (state, array_ids, model)
        return model

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
