"""The pass/fail thresholds and the final report of a load test."""

from __future__ import annotations

from dataclasses import dataclass

from .options import ACCURACY, MIN_ACCURACY_SAMPLE, TEXTS, Settings, Thresholds, format_batch_sizes
from .workload import ServerInfo


# -- results and thresholds ---------------------------------------------------------------------
@dataclass
class Results:
    requests: int
    failures: int
    failures_by_kind: dict[str, int]
    p50_ms: float
    p95_ms: float
    requests_per_second: float
    texts: int
    texts_per_second: float
    checked: int  # labelled texts whose answer was compared with the label
    wrong: int
    exceptions: int = 0  # exceptions in the load test's own code

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return (self.checked - self.wrong) / self.checked if self.checked else None

    @classmethod
    def from_stats(cls, stats, exceptions: int = 0) -> Results:
        """From locust's RequestStats: the Aggregated row holds only real requests (see the module doc)."""
        entries = stats.entries
        texts = entries[(TEXTS[1], TEXTS[0])] if (TEXTS[1], TEXTS[0]) in entries else None
        accuracy = entries[(ACCURACY[1], ACCURACY[0])] if (ACCURACY[1], ACCURACY[0]) in entries else None
        kinds: dict[str, int] = {}
        for error in stats.errors.values():
            if error.method in (TEXTS[0], ACCURACY[0]):
                continue
            kind = str(error.error).split(":", 1)[0] if ":" in str(error.error) else "error"
            kinds[kind] = kinds.get(kind, 0) + error.occurrences
        total = stats.total
        return cls(
            requests=total.num_requests,
            failures=total.num_failures,
            failures_by_kind=kinds,
            p50_ms=float(total.get_response_time_percentile(0.5) or 0) if total.num_requests else 0.0,
            p95_ms=float(total.get_response_time_percentile(0.95) or 0) if total.num_requests else 0.0,
            requests_per_second=float(total.total_rps),
            texts=texts.num_requests if texts else 0,
            texts_per_second=float(texts.total_rps) if texts else 0.0,
            checked=accuracy.num_requests if accuracy else 0,
            wrong=accuracy.num_failures if accuracy else 0,
            exceptions=exceptions,
        )

    def summary(self) -> list[str]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.failures_by_kind.items())) or "none"
        lines = [
            f"requests:    {self.requests} ({self.requests_per_second:.1f}/s), failed {self.failures} "
            f"({self.failure_ratio:.2%}: {kinds}); latency p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms",
            f"texts:       {self.texts} answered, {self.texts_per_second:.1f} texts/s",
        ]
        if self.accuracy is None:
            lines.append("accuracy:    no labelled text checked (is AccuracyUser running?)")
        else:
            lines.append(
                f"accuracy:    {self.accuracy:.2%} of {self.checked} labelled texts ({self.wrong} wrong labels)"
            )
        return lines

    def crossed(self, limits: Thresholds) -> list[str]:
        """One line per threshold the run crossed; empty when it passes."""
        lines = []
        if self.requests == 0:
            lines.append("no request was sent")
        if self.exceptions:
            lines.append(f"{self.exceptions} exceptions in the load test's own code (see the Exceptions table)")
        if self.requests and self.failure_ratio > limits.max_failure_ratio:
            lines.append(
                f"failure ratio {self.failure_ratio:.2%} is above --max-failure-ratio {limits.max_failure_ratio:g}"
            )
        if self.requests and limits.max_p95_ms > 0 and self.p95_ms > limits.max_p95_ms:
            lines.append(f"p95 latency {self.p95_ms:.0f} ms is above --max-p95-ms {limits.max_p95_ms:g}")
        if self.texts_per_second < limits.min_texts_per_second:
            lines.append(
                f"{self.texts_per_second:.1f} texts/s is below --min-texts-per-second {limits.min_texts_per_second:g}"
            )
        if self.accuracy is not None and self.checked >= MIN_ACCURACY_SAMPLE and self.accuracy < limits.min_accuracy:
            lines.append(f"accuracy {self.accuracy:.2%} is below --min-accuracy {limits.min_accuracy:g}")
        return lines


def report(results: Results, limits: Thresholds, header: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """The final report's lines and the thresholds crossed."""
    crossed = results.crossed(limits)
    lines = [header, *results.summary(), *extra]
    if results.accuracy is not None and results.checked < MIN_ACCURACY_SAMPLE:
        lines.append(f"accuracy not judged: {results.checked} labelled texts (< {MIN_ACCURACY_SAMPLE})")
    lines.append("result:      " + (f"FAIL ({len(crossed)} thresholds crossed)" if crossed else "PASS"))
    lines.extend(f"threshold crossed: {line}" for line in crossed)
    return lines, crossed


def describe(settings: Settings, server: ServerInfo | None) -> str:
    served = f", {len(server.labels)} labels, max_batch_size {server.max_batch_size}" if server else ""
    sizes = format_batch_sizes(settings.batch_sizes)
    return (
        f"emotion load test: {settings.protocol} {settings.url} model {settings.model}{served}; "
        f"batch sizes {sizes}, long share {settings.long_share:g}"
    )
