import os

# Tests run on the CPU, single-threaded XLA is plenty for tiny models.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
