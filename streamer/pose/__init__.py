"""The daemon's pose path: BlazePose per camera and the pose collapse model (`worker.py`)."""
