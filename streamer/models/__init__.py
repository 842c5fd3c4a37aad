"""The served video model: which one serves (`identity`), and replacing it while the cameras
keep running (`swap`, `systemctl reload` with a changed `model.checkpoint`)."""
