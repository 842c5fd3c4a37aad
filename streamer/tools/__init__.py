"""The tools wing: the outside view of the service, never imported by it.

Benchmarks (`bench_model`, `bench_pipeline`, `bench_offline`, `bench_train`, sharing `kit`, with
their verbs in `bench_cli`), the soak test (`soak`, `soak_cli`), `vigil demo` (`demo`) and the
harness that runs the real daemon and cameras as child processes (`harness`, also used by the
integration tests). It lives in `streamer` because it is the only package allowed to depend on
both others; `tests/test_architecture.py` checks that nothing outside it imports it.
"""
