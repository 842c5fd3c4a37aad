"""Alert tuning from recordings: the daemon's windows, worker and events run offline
(`offline`), and per-camera thresholds from a camera's own quiet footage (`calibrate`, the
`vigil calibrate` verb in `command`)."""
