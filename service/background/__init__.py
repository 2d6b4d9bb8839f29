"""Background work: the job handlers, the workers that run them, and their supervision."""
