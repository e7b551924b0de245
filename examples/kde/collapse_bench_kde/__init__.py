"""collapse-bench-kde: an example third-party plugin package for collapse-bench.

The plugin module is :mod:`collapse_bench_kde.plugin`, registered under the ``collapse_bench``
entry-point group as ``kde``.
"""

__version__ = "0.1.0"
