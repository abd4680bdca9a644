"""find_job: a job found by the id users type, as scontrol would find it."""

from __future__ import annotations

from gpuwarden.slurm.job import SlurmJob, find_job

PENDING_ARRAY = SlurmJob(
    job_id="40", state="PENDING", array_job_id="40", array_task_id="0-3,7%2", name="arr"
)
RUNNING_TASK = SlurmJob(job_id="41", state="RUNNING", array_job_id="40", array_task_id="5")
OTHER = SlurmJob(job_id="5", state="RUNNING")
HET = SlurmJob(job_id="61", state="RUNNING", het_job_id="60", het_job_offset=1)


def test_plain_id_and_the_ids_users_see() -> None:
    jobs = [PENDING_ARRAY, RUNNING_TASK, OTHER, HET]
    assert find_job(jobs, "5") is OTHER
    assert find_job(jobs, "41") is RUNNING_TASK
    assert find_job(jobs, "40_5") is RUNNING_TASK
    assert find_job(jobs, "60+1") is HET
    assert find_job(jobs, "40") is PENDING_ARRAY


def test_a_task_still_inside_a_pending_array_record_is_that_record_as_the_task() -> None:
    jobs = [PENDING_ARRAY, RUNNING_TASK, OTHER]
    for task in ("0", "2", "3", "7"):  # "%2" is the throttle, not a task
        found = find_job(jobs, f"40_{task}")
        assert found is not None
        assert found.job_id == "40" and found.array_task_id == task and found.name == "arr"
        assert found.display_id == f"40_{task}"


def test_no_match_is_none_never_another_job() -> None:
    jobs = [PENDING_ARRAY, RUNNING_TASK, OTHER]
    for missing in ("6", "40_4", "40_2%2", "41_0", "99_1", "5_0"):
        assert find_job(jobs, missing) is None, missing
    assert find_job([OTHER], "7") is None  # a lone job is not an answer for another id
    broken = SlurmJob(job_id="70", state="PENDING", array_job_id="70", array_task_id="1-9:2")
    assert find_job([broken], "70_3") is None  # a step form it cannot read: no guess
