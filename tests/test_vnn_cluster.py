"""`verify-vnn --scheduler ADDRESS`: branch-and-bound subtrees run as tasks on a Dask cluster
(here a LocalCluster on this machine) and the answer is the one the local engine gives."""

from __future__ import annotations

import json
import os

import pytest

distributed = pytest.importorskip("distributed")

from verifier.vnn import main  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data")
NET = os.path.join(DATA, "vnncomp2021-test", "test_unsat.onnx")
PROP = os.path.join(DATA, "vnncomp2021-acasxu", "prop_1.vnnlib")


def test_subtrees_run_on_the_cluster(capsys):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        status = main(["--onnx", NET, "--vnnlib", PROP, "--timeout", "120", "--json",
                       "--scheduler", cluster.scheduler_address])
        ran = cluster.scheduler.task_prefixes.get("piece_task")  # dask drops the leading _
        assert ran is not None, "no branch-and-bound piece ran on the cluster"
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["answer"] == "unsat"  # the published answer (ACAS Xu 1_6)
    assert report["stats"]["boxes"] > 0


def test_unreachable_scheduler_is_a_usage_error(capsys):
    assert main(["--onnx", NET, "--vnnlib", PROP, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
