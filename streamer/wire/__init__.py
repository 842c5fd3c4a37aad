"""What crosses a ZeroMQ socket into Vigil, and how much of it is taken (`limits`)."""
