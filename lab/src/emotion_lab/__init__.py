"""The project's lab, beside the product (`emotion_triton`): what measures and exercises it, never
what a user installs. `perf/`: `make bench` and its baselines, `make soak`; `loadtest/`: the Locust
logic of loadtest/locustfile.py; `containers/`: `make containers` (a Docker engine, Compose v2, the
stand-in images) and the CPU-host deployment that the container tests and the benchmark drive.
The lab imports the product; the product never imports the lab (pyproject.toml's import contracts)."""
