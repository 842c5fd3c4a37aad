"""The daemon's throughput paths (issue 29), each behind a switch of the `accel:` section:

* `settings.py`: `AccelConfig`, the `accel:` section (validated at load, no heavy imports);
* `device_ring.py`: `DeviceRings`, each camera's frames uploaded once to the model's device and
  windows gathered there;
* `shared_ring.py`: `SharedRingBuffer`, a `RingBuffer` in shared memory that another process
  writes;
* `capture_process.py`: `CaptureProcess`, a camera's capture in its own process (the
  `CaptureThread` run there), so decoding does not hold the worker's GIL.

The model-side rewrites (batch norm folding, `channels_last_3d`, compile) are the detector's:
`detector/inference.py`. Defaults stay today's path until a GPU run measures the new one faster.
"""
