"""First-party plugins of collapse-bench (installed as ``collapse_bench_plugins``)."""
