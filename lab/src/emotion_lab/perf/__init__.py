"""Performance: the benchmark (`make bench`), its in-process baselines, the closed-loop load
generator, and the soak of the local server (`make soak`)."""
