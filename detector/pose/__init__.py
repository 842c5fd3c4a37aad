"""Person pose: BlazePose landmarks (MediaPipe's models, run offline) and what Vigil reads in them.

`blazepose.BlazePose` tracks one person's 33 landmarks per frame; `features` turns a window of
landmarks into fall features; `collapse` is the small model that scores them. See
`docs/models/pose-collapse-v1.md` for what the shipped collapse model can and cannot do.
"""
