"""Who may read job summaries and the waste report, against the real munged and mTLS: a
researcher (MUNGE) sees their own job's summary and no one else's, and is refused the
waste report (every user's figures); a reader gets both."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gpuwarden.common.wire import MUNGE_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.integration.test_roles import (  # noqa: F401 (fixtures)
    MINE,
    RESEARCHER,
    THEIRS,
    Site,
    channel,
    credential,
    munged,
    site,
)


async def test_a_researcher_gets_the_summary_of_their_own_job_only(site: Site) -> None:  # noqa: F811
    async with channel(site, "researcher (MUNGE)") as ch:
        stub = pb_grpc.QueryServiceStub(ch)

        async def md() -> tuple[tuple[str, str], ...]:
            return ((MUNGE_KEY, await asyncio.to_thread(credential)),)

        mine = await stub.GetJobStats(pb.JobStatsRequest(job_id=MINE), metadata=await md())
        theirs = await stub.GetJobStats(pb.JobStatsRequest(job_id=THEIRS), metadata=await md())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetWasteReport(pb.WasteReportRequest(since=0.0), metadata=await md())
    assert mine.found and mine.user == RESEARCHER and mine.job_id == MINE
    assert [d.job_id for d in mine.decisions] == [MINE]
    assert not theirs.found and not theirs.user and not theirs.gpus
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_reader_gets_any_job_and_the_waste_of_every_user(site: Site) -> None:  # noqa: F811
    async with channel(site, "reader") as ch:
        stub = pb_grpc.QueryServiceStub(ch)
        theirs = await stub.GetJobStats(pb.JobStatsRequest(job_id=THEIRS))
        report = await stub.GetWasteReport(pb.WasteReportRequest(since=0.0))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetJobStats(pb.JobStatsRequest(job_id="x" * 200))
    assert theirs.found and theirs.user == "alice"
    users = {r.key for r in report.rows if r.by == "user"}
    assert users == {RESEARCHER, "alice", "root"}
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
