"""Runs payout_job for one partition in this process; the SIGKILL schedules start it as a child.

Usage::

    python -m pf_platform_tests.faults.materialize_day 2026-11-04 --batch-size 2 --concurrency 1

The environment says where everything is: ``PF_HOME`` (landing files and the lake),
``PF_API_BASE_URL`` and ``PF_API_KEY``. The run is recorded in an ephemeral instance whatever
``DAGSTER_HOME`` says: a persistent one writes every event to SQLite, which makes reaching the
transfer phase several times slower, and nothing of the killed run is read back from it. Small
batches sent one at a time stretch the transfer phase, so a kill can land inside it.

With ``--wait`` the runner imports everything, prints ``ready`` and waits for a line on stdin
before it starts the run (and exits without running at end of input): a test can start the next
child while it is still busy with the current one. ``--fan-out spark`` sends from Spark tasks on
a local session, started before ``ready``. The exit code is 0 when the run succeeded and
1 when it failed.
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from pf_platform.definitions import build_definitions
from pf_platform.resources.spark import SparkResource, local_spark_config


def run_config(batch_size: int, concurrency: int, fan_out: str = "in_process") -> dict:
    """Run config that sets the payments resource's batching and keeps its key an env reference."""
    config = {
        # Run config replaces the resource's configuration, so the key is named again here.
        "api_key": {"env": "PF_API_KEY"},
        "batch_size": batch_size,
        "concurrency": concurrency,
        "fan_out": fan_out,
    }
    return {"resources": {"purple_flea": {"config": config}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("day", help="the partition, yyyy-mm-dd")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--wait", action="store_true", help="print ready, then wait for a line")
    parser.add_argument("--fan-out", choices=["in_process", "spark"], default="in_process")
    args = parser.parse_args(argv)

    job = build_definitions("local").resolve_job_def("payout_job")
    if args.fan_out == "spark":
        # Started before "ready", so the kill lands in the transfer phase, not in Spark's start;
        # the job's pyspark resource gets this session from getOrCreate.
        session = SparkResource(spark_config=local_spark_config(master="local[2]")).spark_session
        print(f"spark {session.version} on {session.sparkContext.master}", file=sys.stderr)
    with dg.DagsterInstance.ephemeral() as instance:
        if args.wait:
            print("ready", flush=True)
            if not sys.stdin.readline():
                return 0
        result = job.execute_in_process(
            partition_key=args.day,
            run_config=run_config(args.batch_size, args.concurrency, args.fan_out),
            instance=instance,
            raise_on_error=False,
        )
    print(f"payout_job {args.day}: {'success' if result.success else 'failure'}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
