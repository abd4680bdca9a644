"""gpuwarden.slurm parsers on real captures (tests/fixtures/slurm and /proc)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gpuwarden.slurm import (
    expand_hostlist,
    parse_cmdline,
    parse_dask_worker_cmdline,
    parse_environ,
    parse_gres_indices,
    parse_proc_cgroup,
    parse_scontrol_jobs,
    parse_squeue_json,
    validate_job_id,
    validate_node_name,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SLURM = FIX / "slurm"
PROC = FIX / "proc"


def _by_id(jobs):  # type: ignore[no-untyped-def]
    return {j.job_id: j for j in jobs}


# ---- job ids


@pytest.mark.parametrize("job_id", ["1", "123", "123_4", "123+1", "4294967294"])
def test_valid_job_ids_are_accepted_unchanged(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " 1",
        "1 ",
        "1\n",
        "123\n",
        "\uff11\uff12\uff13",  # full-width digits: \\d would take them
        "12_\u0663",
        "-1",
        "--help",
        "1,2",
        "1;rm -rf /",
        "12_",
        "1_2_3",
        "1+",
        "abc",
        "1.0",
    ],
)
def test_invalid_job_ids_raise_value_error_naming_the_input(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid Slurm job id") as e:
        validate_job_id(bad)
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("node", ["gpu01", "vm", "n1.cluster", "gpu_a-01", "a" * 64])
def test_valid_node_names_are_accepted_unchanged(node: str) -> None:
    assert validate_node_name(node) == node


@pytest.mark.parametrize(
    "bad", ["", "gpu01\n", "gpu01 ", "-gpu01", ".gpu", "gpu[01-02]", "gpu\u0661", "a" * 65]
)
def test_invalid_node_names_raise_value_error_naming_the_input(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid node name") as e:
        validate_node_name(bad)
    assert repr(bad) in str(e.value)


def test_entry_points_for_site_tooling_are_importable_from_the_package() -> None:
    import gpuwarden.slurm as slurm

    for name in (
        "parse_scontrol_jobs",
        "parse_squeue_json",
        "parse_proc_cgroup",
        "parse_gres_indices",
        "parse_dask_worker_cmdline",
    ):
        assert callable(getattr(slurm, name))


# ---- /proc/PID/cgroup


def test_cgroup_under_linuxproc_names_no_job() -> None:
    assert parse_proc_cgroup((PROC / "cgroup_linuxproc_batch.txt").read_text()) is None


def test_cgroup_v1_multi_slurmd_capture_gives_job_step_and_uid() -> None:
    cg = parse_proc_cgroup((PROC / "cgroup_v1_proctrack_cgroup_batch.txt").read_text())
    assert cg is not None
    assert (cg.job_id, cg.step, cg.uid, cg.layout) == ("11", "batch", 0, "v1-multi-slurmd")


def test_cgroup_v1_single_slurmd_gives_job_step_and_uid() -> None:
    cg = parse_proc_cgroup((PROC / "cgroup_v1_slurm_step0.txt").read_text())
    assert cg is not None
    assert (cg.job_id, cg.step, cg.uid, cg.layout) == ("123", "0", 1000, "v1")


@pytest.mark.parametrize(
    ("fixture", "step"),
    [
        ("cgroup_v2_batch.txt", "batch"),
        ("cgroup_v2_step_task.txt", "0"),
        ("cgroup_v2_multi_slurmd_extern.txt", "extern"),
    ],
)
def test_cgroup_v2_gives_job_and_step_without_uid(fixture: str, step: str) -> None:
    cg = parse_proc_cgroup((PROC / fixture).read_text())
    assert cg is not None
    assert (cg.job_id, cg.step, cg.uid, cg.layout) == ("4242", step, None, "v2")


@pytest.mark.parametrize(
    ("fixture", "step"),
    [("cgroup_v2_sluid_batch.txt", "batch"), ("cgroup_v2_sluid_step_task.txt", "0")],
)
def test_cgroup_v2_sluid_gives_sluid_and_step_but_no_job_id(fixture: str, step: str) -> None:
    cg = parse_proc_cgroup((PROC / fixture).read_text())
    assert cg is not None
    assert (cg.job_id, cg.sluid, cg.step, cg.layout) == (None, "s5K1KKYAYG5D00", step, "v2-sluid")


def test_cgroup_outside_slurm_names_no_job() -> None:
    assert parse_proc_cgroup((PROC / "cgroup_v2_no_slurm.txt").read_text()) is None
    assert parse_proc_cgroup("") is None
    assert parse_proc_cgroup("garbage without colons\n") is None


# ---- environ


def test_environ_of_a_real_batch_step_gives_job_user_and_gpus() -> None:
    env = parse_environ((PROC / "environ_batch_step.bin").read_bytes())
    assert env.job_id == "10"
    assert env.user == "root"
    assert env.uid == 0
    assert env.job_gpus == (0, 1)
    assert env.step_gpus is None  # only srun steps have it
    assert env.cuda_visible_devices == ("0", "1")
    assert env.node == "vm"
    assert env.restart_count is None
    assert env.dask_scheduler is None


def test_environ_of_requeued_array_task_with_dask_address() -> None:
    raw = (
        b"SLURM_JOB_ID=77\0SLURM_ARRAY_JOB_ID=70\0SLURM_ARRAY_TASK_ID=7\0SLURM_RESTART_COUNT=2\0"
        b"SLURM_STEP_GPUS=1-2\0CUDA_VISIBLE_DEVICES=GPU-aaaa,GPU-bbbb\0"
        b"DASK_SCHEDULER_ADDRESS=tcp://10.0.0.5:8786\0broken-entry\0"
    )
    env = parse_environ(raw)
    assert (env.job_id, env.array_job_id, env.array_task_id) == ("77", "70", "7")
    assert env.restart_count == 2
    assert env.step_gpus == (1, 2)
    assert env.cuda_visible_devices == ("GPU-aaaa", "GPU-bbbb")
    assert env.dask_scheduler == "tcp://10.0.0.5:8786"


def test_environ_with_malformed_job_id_and_gpu_list_reports_them_absent() -> None:
    env = parse_environ(b"SLURM_JOB_ID=12;x\0SLURM_JOB_GPUS=zero\0")
    assert env.job_id is None
    assert env.job_gpus is None


# ---- GRES and hostlists


@pytest.mark.parametrize(
    ("gres", "idx"),
    [
        ("gpu:1(IDX:0)", (0,)),
        ("gpu:2(IDX:0-1)", (0, 1)),
        ("gpu:tesla:2(IDX:0,2)", (0, 2)),
        ("gpu:a100:1(IDX:1),gpu:v100:1(IDX:3)", (1, 3)),
        ("gpu:4(IDX:0-1,3)", (0, 1, 3)),
        ("gpu:0(IDX:N/A)", ()),
        ("", ()),
        ("mps:100(0/100,0/100)", ()),
    ],
)
def test_gres_detail_gives_gpu_indices(gres: str, idx: tuple[int, ...]) -> None:
    assert parse_gres_indices(gres) == idx


def test_hostlist_expansion_keeps_zero_padding() -> None:
    assert expand_hostlist("gpu[01-03,07],login1") == ("gpu01", "gpu02", "gpu03", "gpu07", "login1")
    assert expand_hostlist("(null)") == ()
    with pytest.raises(ValueError, match="invalid hostlist"):
        expand_hostlist("gpu[a-b]")
    with pytest.raises(ValueError, match="invalid hostlist"):
        expand_hostlist("gpu[\u0661-\u0663]")  # Arabic-Indic digits are not a range
    with pytest.raises(ValueError, match="invalid hostlist"):
        expand_hostlist("gpu[0-99999999]")  # refused, not expanded into memory


# ---- scontrol -d -o show job


def test_scontrol_capture_with_running_pending_completed_array_and_requeued_jobs() -> None:
    jobs = _by_id(parse_scontrol_jobs((SLURM / "scontrol_show_job_1.txt").read_text()))
    assert set(jobs) == {"1", "2", "3", "4", "5", "6", "7"}
    done, run1, run2, requeued = jobs["1"], jobs["2"], jobs["3"], jobs["4"]
    assert done.state == "COMPLETED"
    assert done.gpu_indices("vm") == ()
    assert run1.state == "RUNNING" and run1.gpus_by_node == {"vm": (0,)}
    assert run1.user == "root" and run1.uid == 0
    assert run1.account == "" and run1.qos == ""  # "(null)" is missing, not a name
    assert run1.batch and run1.requeue and run1.name == "gw-cap-run1"
    assert run1.partition == "debug" and run1.nodes == ("vm",) and run1.batch_host == "vm"
    assert run1.start_time == int(datetime(2026, 11, 28, 4, 45, 1).timestamp())
    assert run2.gpus_by_node == {"vm": (1, 2)} and run2.account == "root"
    assert requeued.state == "PENDING" and requeued.start_time is None
    assert requeued.gpus_by_node == {}
    array_running, array_pending = jobs["7"], jobs["5"]
    assert array_running.display_id == "5_0" and array_running.running
    assert array_pending.display_id == "5_1" and array_pending.state == "PENDING"
    pending = jobs["6"]
    assert pending.requeue is False and pending.reason == "Priority"


def test_scontrol_capture_after_requeue_shows_restart_count() -> None:
    jobs = _by_id(parse_scontrol_jobs((SLURM / "scontrol_show_job_2.txt").read_text()))
    assert jobs["4"].state == "RUNNING"
    assert jobs["4"].restart_count == 1
    assert jobs["4"].gpus_by_node == {"vm": (3,)}
    assert jobs["7"].state == "CANCELLED"


def test_scontrol_typed_multinode_job_maps_each_node_to_its_indices() -> None:
    (job,) = parse_scontrol_jobs((SLURM / "scontrol_show_job_typed_multinode.txt").read_text())
    assert job.job_id == "7001"
    assert job.name == "train resnet 50"
    assert (job.user, job.uid, job.account, job.qos, job.partition) == (
        "alice",
        1000,
        "proj-a",
        "normal",
        "gpu",
    )
    assert job.nodes == ("gpu01", "gpu02")
    assert job.gpus_by_node == {"gpu01": (0, 2), "gpu02": (1, 3)}


def test_scontrol_no_jobs_and_garbage() -> None:
    assert parse_scontrol_jobs("No jobs in the system\n") == []
    with pytest.raises(ValueError, match="not a scontrol job record"):
        parse_scontrol_jobs("slurm_load_jobs error: Unable to contact slurm controller\n")


# ---- squeue --json


def test_squeue_json_matches_scontrol_on_the_same_cluster_state() -> None:
    from_json = _by_id(parse_squeue_json((SLURM / "squeue_2.json").read_text()))
    from_text = _by_id(parse_scontrol_jobs((SLURM / "scontrol_show_job_2.txt").read_text()))
    for job_id in ("2", "3", "4"):
        a, b = from_json[job_id], from_text[job_id]
        assert (a.state, a.user, a.uid, a.name, a.partition, a.requeue, a.restart_count) == (
            b.state,
            b.user,
            b.uid,
            b.name,
            b.partition,
            b.requeue,
            b.restart_count,
        )
        assert a.gpus_by_node == b.gpus_by_node
        assert a.start_time == b.start_time
    assert from_json["7"].display_id == "5_0"


def test_squeue_json_filters_on_the_client_side() -> None:
    text = (SLURM / "squeue_1.json").read_text()
    assert [j.job_id for j in parse_squeue_json(text, job_ids=["3"])] == ["3"]
    assert [j.job_id for j in parse_squeue_json(text, job_ids=["5_0"])] == ["7"]
    assert parse_squeue_json(text, job_ids=["999"]) == []
    with pytest.raises(ValueError, match="not JSON"):
        parse_squeue_json("squeue: error: ...")


# ---- Dask workers


def test_dask_jobqueue_worker_command_line_is_recognised() -> None:
    argv = parse_cmdline((SLURM / "dask_worker_cmdline.bin").read_bytes())
    facts = parse_dask_worker_cmdline(argv)
    assert facts is not None
    assert (facts.scheduler, facts.name) == ("tcp://127.0.0.1:33745", "SLURMCluster-3")


@pytest.mark.parametrize(
    ("argv", "scheduler", "name"),
    [
        (["/opt/env/bin/dask-worker", "10.0.0.5:8786", "--name=w1"], "10.0.0.5:8786", "w1"),
        (
            ["/usr/bin/python3", "/opt/env/bin/dask", "worker", "tls://h:8786", "--name", "w2"],
            "tls://h:8786",
            "w2",
        ),
        (["dask", "worker", "--scheduler-file", "/tmp/s.json"], "", ""),
    ],
)
def test_other_dask_worker_launchers_are_recognised(
    argv: list[str], scheduler: str, name: str
) -> None:
    facts = parse_dask_worker_cmdline(argv)
    assert facts is not None
    assert (facts.scheduler, facts.name) == (scheduler, name)


@pytest.mark.parametrize(
    "argv",
    [
        ["sleep", "600"],
        ["python", "-m", "distributed.cli.dask_scheduler", "--port", "8786"],
        ["python", "train.py", "--name", "dask-worker"],
        [],
    ],
)
def test_non_worker_command_lines_are_not_dask_workers(argv: list[str]) -> None:
    assert parse_dask_worker_cmdline(argv) is None
