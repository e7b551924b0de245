"""The model cache the torch plugins share."""

import numpy as np

from collapse_bench_plugins.state_cache import StateModelCache


def test_hits_only_the_same_state_with_the_same_arrays_and_evicts_the_oldest():
    cache = StateModelCache(2)
    built = []

    def build(tag):
        built.append(tag)
        return tag

    a, b, c = ({"w": np.zeros(2)} for _ in range(3))
    assert cache.get(a, "cpu", lambda: build("a")) == "a"
    assert cache.get(a, "cpu", lambda: build("a2")) == "a"  # hit
    assert cache.get(a, "cuda", lambda: build("a-cuda")) == "a-cuda"  # another key: miss
    a["w"] = np.ones(2)  # the same dict with a replaced array must not hit
    assert cache.get(a, "cpu", lambda: build("a3")) == "a3"
    cache.get(b, "cpu", lambda: build("b"))
    cache.get(c, "cpu", lambda: build("c"))
    assert len(cache) == 2
    assert cache.get(a, "cpu", lambda: build("a4")) == "a4"  # evicted as the least recently used
    assert built == ["a", "a-cuda", "a3", "b", "c", "a4"]
