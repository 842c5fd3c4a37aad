"""The tools wing: the outside view of the service, never imported by it, never in the wheel.

Benchmarks (`bench_model`, `bench_pipeline`, `bench_offline`, `bench_train`, sharing `kit`, with
their verbs in `bench_cli`), the soak test (`soak`, `soak_cli`), `vigil demo` (`demo`), the fleet
benchmark (`fleet_bench`) and the harness that runs the real daemon and cameras as child
processes (`harness`, also used by the integration tests). It sits beside the three packages of
the service (it may import all of them; none of them imports it: `tests/test_architecture.py`)
and is left out of the wheel (`setup.cfg` packages; `tests/test_packaging.py` reads the wheel's
file list). `vigil demo`, `vigil bench` and `vigil soak` work from a source checkout (`make
install` installs it editable; `streamer/cli.py` finds this folder beside `streamer/`); an
installed wheel answers them with one line saying so.
"""
