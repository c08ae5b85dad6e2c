"""The logic of the Locust load test (`loadtest/locustfile.py`) of the `emotion` ensemble.

The locustfile holds the User classes and the event hooks; everything else is in this package, a module per job: the options,
the texts to send (a labelled file, the Hub split, long texts near the truncation limit), one call
timed and checked, the texts-per-second and accuracy statistics, the step-ramp load shape, CPU use of
the load generator and the server, the pass/fail thresholds, and the texts/s and accuracy charts
of the web page.

Nothing here imports locust: importing it monkey-patches the whole process with gevent, which the
test process must not be. The locustfile passes locust's objects in (they are duck-typed here).

Statistics, next to one row per kind of request (`gRPC batch 8`, ...):
- `TEXTS answered texts`: one entry per answered text, so its count is the number of texts and its
  requests/s is texts/s (a batch of 64 counts 64); its response times are the latency each text saw;
- `ACCURACY labelled texts`: one entry per labelled text checked; a wrong label is a failure
  (`wrong label: expected joy, got sadness`), so its failure count is the number of wrong answers and
  its average size is the running accuracy in percent.
Both are logged straight into their stats entries, not through the request event, so the Aggregated
row, the failure ratio and the latency percentiles stay those of real requests.
"""

from .cpu_meter import CpuMeter, CpuSample, find_server_pid
from .locust_stats import call, check_answer, failure_message, log_accuracy, log_texts
from .options import (
    ACCURACY,
    DEFAULT_DATA,
    DEFAULT_HOST,
    LONG_WORDS,
    MIN_ACCURACY_SAMPLE,
    REQUEST_TYPES,
    STEP_SHAPE_GAIN,
    TEXTS,
    Settings,
    Thresholds,
    add_options,
    format_batch_sizes,
    parse_batch_sizes,
    parse_host,
    use_gevent_for_grpc,
)
from .plots import plot_history
from .results import Results, describe, report
from .session import Session
from .step_shape import ShapeLogic, Snapshot, Step, find_knee, percentile, step_table
from .web_charts import ChartHistory, register_web_charts
from .workload import ServerInfo, Workload, load_labelled, long_texts, resolve_data

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_HOST",
    "REQUEST_TYPES",
    "TEXTS",
    "ACCURACY",
    "MIN_ACCURACY_SAMPLE",
    "LONG_WORDS",
    "STEP_SHAPE_GAIN",
    "add_options",
    "format_batch_sizes",
    "parse_batch_sizes",
    "parse_host",
    "Settings",
    "use_gevent_for_grpc",
    "ServerInfo",
    "resolve_data",
    "load_labelled",
    "long_texts",
    "Workload",
    "check_answer",
    "failure_message",
    "log_texts",
    "log_accuracy",
    "call",
    "find_server_pid",
    "CpuSample",
    "CpuMeter",
    "Snapshot",
    "percentile",
    "Step",
    "find_knee",
    "step_table",
    "ShapeLogic",
    "Thresholds",
    "Results",
    "report",
    "describe",
    "Session",
    "plot_history",
    "ChartHistory",
    "register_web_charts",
]
