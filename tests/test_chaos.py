"""The chaos harness's short run (`bench/chaos.py`, `python -m bench.chaos --quick`).

10 sessions x 3 turns through 2 gateway processes and 3 worker processes on a dev server
with a SQLite file; while turns are in flight a worker is killed with kill -9 (and replaced),
a gateway is killed with kill -9 (and started again on its port), and the dev server is
killed with kill -9 and started again on the same file and port. Clients retry with the same
message ids. Every message must be in its session's history exactly once, in send order,
with exactly one reply: the one its client was given.
"""

import pytest

from bench.chaos import (
    KILL_GATEWAY,
    KILL_WORKER,
    RESTART_SERVER,
    new_cluster,
    print_report,
    quick_options,
    run_chaos,
)

pytestmark = pytest.mark.slow


async def test_chaos_loses_and_duplicates_no_message(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    opts = quick_options()
    cluster = new_cluster(opts, tmp_path_factory.mktemp("chaos"))
    try:
        report = await run_chaos(opts, cluster)
    finally:
        cluster.kill_all()  # run_chaos stops everything itself; this is for an interrupted run
    print_report(report, opts)  # shown by pytest when an assertion below fails

    assert not cluster.alive()
    assert report.done == {KILL_WORKER: 1, KILL_GATEWAY: 1, RESTART_SERVER: 1}, report.missed
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.turns_answered == report.turns_planned == opts.sessions * opts.turns
    assert report.out_of_order == report.wrong_content == report.reply_changed == 0
    assert report.error_replies == 0
    assert report.anomalies == []
    assert report.ok
