"""GRES forms seen in the field, hostile job names and malformed records, on captures of the
real Slurm 22.05 (hostile names) and records made from them (older formats); see
tests/fixtures/slurm/README.md."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpuwarden.slurm import parse_gres_indices, parse_scontrol_jobs, parse_squeue_json
from gpuwarden.slurm.gres import GresItem, parse_gres
from gpuwarden.slurm.scontrol import read_scontrol_jobs
from gpuwarden.slurm.squeue import read_squeue_jobs

SLURM = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


# ---- GRES forms


@pytest.mark.parametrize(
    ("gres", "idx"),
    [
        ("gpu(IDX:0,2-3,5)", (0, 2, 3, 5)),  # 18.08 GRES_IDX=, no count
        ("gpu(IDX:5)", (5,)),  # 19.05, no count
        ("gpu:a100:2(IDX:0-1)", (0, 1)),
        ("gpu:3090:1(IDX:2)", (2,)),  # a type made of digits is still a type
        ("gpu:1g.10gb:1(IDX:3)", (3,)),  # MIG profile as type
        ("gpu:a100:1(IDX:1),gpu:v100:1(IDX:3)", (1, 3)),
        ("shard:a100:2(2/4,0/4)", ()),  # a share of a GPU, never the whole GPU
        ("gpu:1(IDX:2),shard:1(0/4,0/4,1/4)", (2,)),
        ("gpu:a100(CNT:2)", ()),  # a count without indices names no GPU
        ("gpu:a100:2(CNT:2,IDX:0-1)", (0, 1)),
        ("gpu:0(IDX:N/A)", ()),
        ("(null)", ()),
    ],
)
def test_gres_forms_seen_in_the_field(gres: str, idx: tuple[int, ...]) -> None:
    assert parse_gres_indices(gres) == idx


def test_gres_elements_keep_name_type_and_count() -> None:
    assert parse_gres("gpu:a100:1(IDX:1),shard:a100:2(2/4,0/4),gpu(CNT:2)") == (
        GresItem("gpu", "a100", 1, (1,)),
        GresItem("shard", "a100", 2, ()),
        GresItem("gpu", "", 2, ()),
    )


@pytest.mark.parametrize(
    "bad", ["gpu:2(IDX:0-", "gpu:2(IDX:a-b)", "gpu:2(FOO:1)", "gpu;rm", "gpu:a:b:c:1(IDX:0)"]
)
def test_unreadable_gres_raises_naming_the_text(bad: str) -> None:
    with pytest.raises(ValueError, match="unreadable GRES") as e:
        parse_gres_indices(bad)
    assert repr(bad) in str(e.value)


def test_scontrol_records_of_every_form_map_each_node_to_its_gpus() -> None:
    parsed = read_scontrol_jobs((SLURM / "scontrol_gres_formats.txt").read_text())
    jobs = {j.name: j for j in parsed.jobs}
    assert jobs["fmt-18.08-gres-idx"].gpus_by_node == {"gpu18": (0, 2, 3, 5)}
    assert jobs["fmt-19.05-no-count"].gpus_by_node == {"gpu19": (5,)}
    assert jobs["fmt-typed"].gpus_by_node == {"gpu03": (0, 1)}
    assert jobs["fmt-two-types"].gpus_by_node == {"gpu04": (1, 3)}
    assert jobs["fmt-shard"].gpus_by_node == {"gpu05": ()}
    assert jobs["fmt-gpu-and-shard"].gpus_by_node == {"gpu06": (2,)}
    assert jobs["fmt-cnt"].gpus_by_node == {"gpu07": ()}
    assert jobs["fmt-cnt-idx"].gpus_by_node == {"gpu08": (0, 1)}
    multi = jobs["fmt-multinode"]
    assert multi.nodes == ("gpu10", "gpu11", "gpu12")
    assert multi.gpus_by_node == {"gpu10": (0, 1, 2, 3), "gpu11": (0, 1, 2, 3), "gpu12": (1, 3)}
    assert multi.cpus_by_node == {"gpu10": 8, "gpu11": 8, "gpu12": 4}


# ---- one bad record is skipped, counted and logged; the others still come back


def test_a_malformed_scontrol_record_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    text = (SLURM / "scontrol_gres_formats.txt").read_text()
    parsed = read_scontrol_jobs(text)
    assert len(parsed.jobs) == 9
    assert len(parsed.skipped) == 2
    assert "unreadable GRES 'gpu:a100:2(IDX:0-'" in parsed.skipped[0]
    assert "lacks UserId, JobState" in parsed.skipped[1]
    with caplog.at_level(logging.WARNING, logger="gpuwarden.slurm.scontrol"):
        assert len(parse_scontrol_jobs(text)) == 9
    assert sum("skipped one job record" in r.message for r in caplog.records) == 2


def test_a_malformed_squeue_record_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads((SLURM / "squeue_hostile_names.json").read_text())
    doc["jobs"][1]["gres_detail"] = ["gpu:1(IDX:"]
    doc["jobs"][2]["job_id"] = "12;reboot"
    doc["jobs"].append("not a job")
    parsed = read_squeue_jobs(json.dumps(doc))
    assert [j.job_id for j in parsed.jobs] == ["32", "35"]
    assert len(parsed.skipped) == 3
    with caplog.at_level(logging.WARNING, logger="gpuwarden.slurm.squeue"):
        assert [j.job_id for j in parse_squeue_json(json.dumps(doc))] == ["32", "35"]
    assert sum("skipped one job record" in r.message for r in caplog.records) == 3


# ---- hostile names (captured on the real Slurm 22.05; all four jobs are root's, no account)


def test_squeue_json_attributes_hostile_jobs_exactly() -> None:
    jobs = {
        j.job_id: j for j in parse_squeue_json((SLURM / "squeue_hostile_names.json").read_text())
    }
    spoof_user, spoof_gpus, spoof_newline, spoof_paths = (jobs[i] for i in ("32", "33", "34", "35"))
    assert spoof_user.name == "x UserId=svc-monitor(999) Account=exempt Requeue=1"
    assert (spoof_user.user, spoof_user.uid, spoof_user.account, spoof_user.requeue) == (
        "root",
        0,
        "",
        False,
    )
    assert spoof_gpus.name == "y Nodes=vm GRES=gpu:4(IDX:0-3)"
    assert spoof_gpus.gpus_by_node == {"vm": (1,)}
    assert spoof_newline.name.startswith("z\nJobId=424242 JobName=fake")
    assert (spoof_newline.user, spoof_newline.gpus_by_node) == ("root", {"vm": (2,)})
    assert "424242" not in jobs
    assert (spoof_paths.user, spoof_paths.account, spoof_paths.gpus_by_node) == (
        "root",
        "",
        {"vm": (3,)},
    )


def test_scontrol_text_never_attributes_a_field_from_user_text() -> None:
    parsed = read_scontrol_jobs((SLURM / "scontrol_hostile_names.txt").read_text())
    jobs = {j.job_id: j for j in parsed.jobs}
    # A name or path that imitates a field makes its record unreadable, never misread.
    assert set(jobs) <= {"32", "33", "34", "35"}
    for job in jobs.values():
        assert (job.user, job.uid, job.account) == ("root", 0, "")
    assert "424242" not in jobs
    assert jobs["33"].name == "y Nodes=vm GRES=gpu:4(IDX:0-3)"
    assert jobs["33"].gpus_by_node == {"vm": (1,)}  # not the four GPUs of its name
    assert jobs["35"].gpus_by_node == {"vm": (3,)}  # comment and work dir are not read
    assert len(parsed.skipped) == 2
    assert any("UserId= twice" in s for s in parsed.skipped)  # job 32
    assert any("JobId= twice" in s for s in parsed.skipped)  # job 34's line break
