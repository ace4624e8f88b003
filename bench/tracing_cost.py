"""Benchmark: what OpenTelemetry tracing costs (issue 26, item 5).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/tracing_cost.py \\
        [--events 20000] [--rate 200] [--seconds 10] [--messages 3000] [--runs 3]

Measures bench/events.py's and bench/delivery.py's figures with tracing off and on, in the same
run, interleaved (off then on in odd runs, on then off in even ones, so a busy moment of the
shared machine hits both alike), and prints medians and the loss:
- events (bench/events.py's phases): the API accepting --events in batches of 500 (gunicorn, 3
  workers, 4 clients); one worker scoring and segmenting them; P99 from sending to processed at
  --rate events/s for --seconds;
- delivery (bench/delivery.py's `batched` phase): one worker delivering --messages to a local SMTP
  sink (claim, rules, render, send, record).
"On" is every process started with OTEL_TRACES_SAMPLER=always_on (100 %) and the OTLP/HTTP
exporter pointed at a loopback receiver in this process (core/testing/otlp_sink.py, counting
spans). The real exporter, not a no-op one: encoding spans to protobuf and POSTing them is part
of what tracing costs the app's processes; only the collector's work is replaced, by a cheap
receiver that still runs on this machine's cores. Target: at most 10 % lost per figure.
"Off" is the code as shipped with no OTEL_* variable: its only cost is one `_tracer is None`
check per hook, measured here in-process (`off_hooks`) against the time per event and per message.
Prints one JSON object; the load average (`uptime`) at start and end goes with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import delivery as delivery_bench  # noqa: E402
from bench import events as events_bench  # noqa: E402
from bench.common import Services, manage, process, wait_http  # noqa: E402
from core.testing.otlp_sink import OtlpSink  # noqa: E402
from core.testing.pgcluster import free_port  # noqa: E402

MAX_LOSS = 0.10
MODES = ("off", "on")


def mode_env(env: dict[str, str], mode: str, receiver: OtlpSink) -> dict[str, str]:
    clean = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    if mode == "off":
        return clean
    return {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_SERVICE_NAME": "leadflow-bench"}


def order(run: int) -> tuple[str, ...]:
    return MODES if run % 2 == 0 else MODES[::-1]


def events_part(args: argparse.Namespace, receiver: OtlpSink) -> dict[str, dict[str, list[float]]]:
    services = Services()
    tmp, env = services.tmp, services.env
    figures: dict[str, dict[str, list[float]]] = {m: {"accepted_per_second": [], "processed_per_second": [],
                                                      "latency_p99_seconds": []} for m in MODES}
    try:
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "shell", "-c", events_bench.SETUP)
        key = manage(env, "create_api_key", "bench", "--rate-limit", "1000000").split()[-1]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        for run in range(args.runs):
            for mode in order(run):
                index = 2 * run + MODES.index(mode)  # distinct idempotency keys per phase
                port = free_port()
                url = f"http://127.0.0.1:{port}/api/v1/events"
                menv = mode_env(env, mode, receiver)
                gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-b",
                            f"127.0.0.1:{port}", "-w", "3", "--log-level", "warning"]
                with process(gunicorn, menv, tmp / f"gunicorn-{index}.log"):
                    wait_http(port, tmp / f"gunicorn-{index}.log")
                    accepted = events_bench.accept_phase(index, url, headers, args)
                    worker = [sys.executable, str(ROOT / "manage.py"), "worker", "events"]
                    with process(worker, menv, tmp / f"worker-{index}.log"):
                        processed = events_bench.process_phase(accepted["events"], services.db_url)
                        latency = events_bench.latency_phase(index, url, headers, args, menv, services.db_url)
                figures[mode]["accepted_per_second"].append(accepted["per_second"])
                figures[mode]["processed_per_second"].append(processed["per_second"])
                figures[mode]["latency_p99_seconds"].append(latency["p99_seconds"])
                print(json.dumps({"part": "events", "run": run + 1, "mode": mode, "accepted": accepted,
                                  "processed": processed, "latency": latency, "spans": receiver.span_count}),
                      file=sys.stderr, flush=True)
    finally:
        services.stop()
    return figures


def delivery_part(args: argparse.Namespace, receiver: OtlpSink) -> dict[str, dict[str, list[float]]]:
    services = Services(DELIVERY_PARALLEL="3", DELIVERY_BATCH_SIZE="500",
                        LEADFLOW_DKIM_BENCH=delivery_bench.dkim_key_pem())
    tmp, env = services.tmp, services.env
    smtp_port = free_port()
    figures: dict[str, dict[str, list[float]]] = {m: {"batched_per_second": []} for m in MODES}
    worker = [sys.executable, str(ROOT / "manage.py"), "worker", "delivery"]
    try:
        with process([sys.executable, str(ROOT / "bench" / "_smtp_sink.py"), str(smtp_port), str(tmp / "sink.log")],
                     env, tmp / "sink.out"):
            manage(env, "migrate", "--noinput", "-v0")
            manage(env, "shell", "-c", delivery_bench.SETUP.format(
                contacts=args.messages, port=smtp_port, limit=delivery_bench.LIMIT, burst=delivery_bench.BURST,
                runs=2 * args.runs))
            for run in range(args.runs):
                for mode in order(run):
                    index = 2 * run + MODES.index(mode)  # its own sender: fast0, fast1, ...
                    rate = delivery_bench.worker_rate(services, mode_env(env, mode, receiver), worker,
                                                      tmp / f"worker-{index}.log", f"fast{index}", args.messages)
                    figures[mode]["batched_per_second"].append(round(rate, 1))
                    print(json.dumps({"part": "delivery", "run": run + 1, "mode": mode, "per_second": round(rate, 1),
                                      "spans": receiver.span_count}), file=sys.stderr, flush=True)
    finally:
        services.stop()
    return figures


def off_hooks(n: int = 200_000) -> dict[str, float]:
    """Nanoseconds per hook with tracing off (what every traced spot costs when nobody traces)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ENV_FILE", "")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from core import tracing

    assert not tracing.enabled()
    timings = {}
    for name, hook in (("span", lambda: tracing.span("x", message_id=1)),
                       ("cause_span", lambda: tracing.cause_span("x", "c", message_id=1))):
        started = time.perf_counter()
        for _ in range(n):
            with hook():
                pass
        timings[name] = (time.perf_counter() - started) / n * 1e9
    started = time.perf_counter()
    for _ in range(n):
        tracing.set_attributes(outcome="sent")
    timings["set_attributes"] = (time.perf_counter() - started) / n * 1e9
    return {k: round(v, 1) for k, v in timings.items()}


def compare(figures: dict[str, dict[str, list[float]]], lower_is_better: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in figures["off"]:
        off, on = statistics.median(figures["off"][name]), statistics.median(figures["on"][name])
        loss = (on - off) / off if name in lower_is_better else (off - on) / off
        out[name] = {"off": off, "on": on, "loss": round(loss, 3), "met": loss <= MAX_LOSS,
                     "off_runs": figures["off"][name], "on_runs": figures["on"][name]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--contacts", type=int, default=20_000, help="distinct emails the events come from")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3, help="off/on pairs per part; figures are medians")
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "tracing_cost", "db": "postgresql", "events": args.events,
                              "messages": args.messages, "runs": args.runs, "sampling": "always_on (100 %)",
                              "exporter": "OTLP/HTTP to a loopback receiver", "load_at_start": os.getloadavg()}
    with OtlpSink(keep=False) as receiver:
        events = compare(events_part(args, receiver), {"latency_p99_seconds"})
        delivery = compare(delivery_part(args, receiver), set())
        result["spans_received"] = receiver.span_count
    hooks = off_hooks()
    per_event_ns = 1e9 / events["processed_per_second"]["off"]
    per_message_ns = 1e9 / delivery["batched_per_second"]["off"]
    # Per message: render and send spans, two set_attributes (reply code, outcome). Per event batch
    # a handful of hooks, shared by up to 4,000 events: per event, one hook at most.
    message_hooks_ns = 2 * hooks["cause_span"] + 2 * hooks["set_attributes"]
    result.update({
        "events": events, "delivery": delivery,
        "off_hooks": {"ns_per_hook": hooks, "share_of_an_events_time": round(hooks["span"] / per_event_ns, 6),
                      "share_of_a_messages_time": round(message_hooks_ns / per_message_ns, 6)},
        "load_at_end": os.getloadavg(),
    })
    result["all_met"] = all(f["met"] for f in [*events.values(), *delivery.values()])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
