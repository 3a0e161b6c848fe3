"""Orchestration's data layer (issue #16, migration 0308) on a real Postgres: the status
machine in Python and SQL, parent and child tasks, the wake-up of a waiting parent under
concurrent approvals, cancellation cascades, reject → rework, paused runs and tool approvals,
agents paused by their failure streak (with the real worker), the inbox, and RLS."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

import psycopg
import pytest

from app.db import tenant_transaction
from app.dispatch import tasks as repo
from app.dispatch.status import (
    ENGINE_TRANSITIONS,
    TRANSITIONS,
    InvalidTransition,
    Status,
    all_steps,
    check_transition,
)
from app.dispatch.worker import Worker, claim_next

# How to bring a fresh task into each status with direct SQL (the trigger allows each step).
PATHS: dict[Status, list[Status]] = {
    Status.DRAFT: [],
    Status.ACTIVE: [Status.ACTIVE],
    Status.REVIEW: [Status.ACTIVE, Status.REVIEW],
    Status.APPROVED: [Status.ACTIVE, Status.REVIEW, Status.APPROVED],
    Status.REJECTED: [Status.ACTIVE, Status.REVIEW, Status.REJECTED],
    Status.FAILED: [Status.ACTIVE, Status.FAILED],
    Status.WAITING: [Status.ACTIVE, Status.WAITING],
    Status.PAUSED: [Status.ACTIVE, Status.PAUSED],
    Status.CANCELLED: [Status.CANCELLED],
}


@contextmanager
def tx(pool, tenant, actor="test"):
    with tenant_transaction(pool, tenant.id, actor=actor) as conn:
        yield conn


def sql_step(conn, task_id, target: Status) -> None:
    """One status change as plain SQL, with what the database asks for some steps."""
    conn.execute(
        """UPDATE tasks SET status = %(s)s::task_status,
                  paused_reason = CASE WHEN %(s)s = 'Paused' THEN 'test pause' END,
                  last_error = CASE WHEN %(s)s = 'Draft' THEN 'test reason' ELSE last_error END
            WHERE id = %(id)s""", {"s": str(target), "id": task_id})


def new_task(conn, tenant, status: Status = Status.ACTIVE, **kw) -> dict:
    task = repo.create_task(conn, tenant.id, title=kw.pop("title", f"t-{status}"), **kw)
    for step in PATHS[status]:
        sql_step(conn, task["id"], step)
    return repo.get_task(conn, task["id"])


def agent(conn, tenant, name, **kw) -> dict:
    return repo.create_agent(conn, tenant.id, name=name, **kw)


def kinds(conn, task_id) -> list[str]:
    return [e["kind"] for e in repo.list_events(conn, task_id=task_id)]


def payloads(conn, task_id, kind) -> list[dict]:
    return [e["payload"] for e in repo.list_events(conn, task_id=task_id) if e["kind"] == kind]


# -- the status machine -----------------------------------------------------------------------

def test_the_sql_table_and_the_python_table_are_the_same(app_pool, make_tenant):
    with tx(app_pool, make_tenant("machine")) as conn:
        labels = [r["l"] for r in conn.execute(
            "SELECT unnest(enum_range(NULL::task_status))::text AS l")]
        allowed = {(Status(r["a"]), Status(r["b"])) for r in conn.execute(
            """SELECT a::text AS a, b::text AS b
                 FROM unnest(enum_range(NULL::task_status)) a,
                      unnest(enum_range(NULL::task_status)) b
                WHERE task_status_allowed(a, b)""")}
    assert sorted(labels) == sorted(Status)
    assert allowed == all_steps()
    # the engine's steps are not the operator's
    assert not any(b in TRANSITIONS[a] for a, b in ENGINE_TRANSITIONS)
    assert {(Status.ACTIVE, Status.WAITING), (Status.WAITING, Status.ACTIVE),
            (Status.ACTIVE, Status.PAUSED), (Status.ACTIVE, Status.DRAFT)} == ENGINE_TRANSITIONS
    for source in (Status.DRAFT, Status.ACTIVE, Status.WAITING, Status.PAUSED, Status.REVIEW,
                   Status.REJECTED, Status.FAILED):
        assert Status.CANCELLED in TRANSITIONS[source]
    assert TRANSITIONS[Status.APPROVED] == TRANSITIONS[Status.CANCELLED] == frozenset()


@pytest.mark.parametrize("source", list(Status))
def test_every_step_from_each_status_is_allowed_or_refused_in_python_and_in_sql(
        app_pool, make_tenant, source):
    tenant = make_tenant("steps")
    for target in Status:
        if target == source:
            continue
        step = (source, target)
        operator = target in TRANSITIONS[source]
        engine = operator or step in ENGINE_TRANSITIONS
        for as_engine, expected in ((False, operator), (True, engine)):
            if expected:
                check_transition(source, target, engine=as_engine)
            else:
                with pytest.raises(InvalidTransition, match=f"from {source} to {target}"):
                    check_transition(source, target, engine=as_engine)
        with tx(app_pool, tenant) as conn:
            task = new_task(conn, tenant, source)
            if engine:
                sql_step(conn, task["id"], target)
                assert repo.get_task(conn, task["id"])["status"] == target
            else:
                with pytest.raises(psycopg.errors.CheckViolation,
                                   match=f"cannot move from {source} to {target}"), \
                        conn.transaction():
                    sql_step(conn, task["id"], target)
                assert repo.get_task(conn, task["id"])["status"] == source
            # the operator's move: refused unless an operator step (nothing written)
            task = new_task(conn, tenant, source)
            before = kinds(conn, task["id"])
            if operator:
                assert repo.move_task(conn, task["id"], target)["status"] == target
            elif not operator:
                with pytest.raises(InvalidTransition), conn.transaction():
                    repo.move_task(conn, task["id"], target)
                assert kinds(conn, task["id"]) == before


def test_paused_needs_a_reason_and_leaving_it_clears_it(app_pool, make_tenant):
    tenant = make_tenant("pausereason")
    with tx(app_pool, tenant) as conn:
        task = new_task(conn, tenant, Status.ACTIVE)
        for reason in ("NULL", "'  '"):
            with pytest.raises(psycopg.errors.CheckViolation, match="to Paused without a reason"
                               ), conn.transaction():
                conn.execute(f"UPDATE tasks SET status = 'Paused', paused_reason = {reason} "
                             "WHERE id = %s", [task["id"]])
        paused = repo.pause_task(conn, task["id"], "cost cap $0.50 reached")
        assert (paused["status"], paused["paused_reason"]) == ("Paused", "cost cap $0.50 reached")
        assert paused["paused_at"] is not None
        resumed = repo.resume_task(conn, task["id"])
        assert (resumed["paused_reason"], resumed["paused_at"]) == (None, None)
        # a reason on a task that is not Paused does not stick
        conn.execute("UPDATE tasks SET paused_reason = 'stray' WHERE id = %s", [task["id"]])
        assert repo.get_task(conn, task["id"])["paused_reason"] is None
        with pytest.raises(ValueError, match="say why"):
            repo.pause_task(conn, task["id"], " ")


def test_leaving_active_drops_the_claim_in_the_database(app_pool, make_tenant):
    tenant = make_tenant("claimdrop")
    with tx(app_pool, tenant) as conn:
        task = new_task(conn, tenant, Status.ACTIVE)
    assert claim_next(app_pool, tenant.id, "w/claim")["id"] == task["id"]
    with tx(app_pool, tenant) as conn:
        conn.execute("UPDATE tasks SET status = 'Waiting' WHERE id = %s", [task["id"]])
        row = repo.get_task(conn, task["id"])
    assert (row["claimed_by"], row["lease_until"]) == (None, None)


def test_run_state_is_saved_without_an_event(app_pool, make_tenant):
    tenant = make_tenant("runstate")
    with tx(app_pool, tenant) as conn:
        task = new_task(conn, tenant, Status.ACTIVE)
        before = kinds(conn, task["id"])
        conn.execute("""UPDATE tasks SET run_state = '{"turns": [1, 2]}' WHERE id = %s""",
                     [task["id"]])
        assert kinds(conn, task["id"]) == before
        assert "run_state" not in repo.get_task(conn, task["id"])


# -- parent and child tasks -------------------------------------------------------------------

def test_a_child_is_active_one_level_deeper_with_events_on_both(app_pool, make_tenant):
    tenant = make_tenant("child")
    with tx(app_pool, tenant, actor="agent-run") as conn:
        writer = agent(conn, tenant, "Writer")
        parent = new_task(conn, tenant, Status.ACTIVE, title="Launch")
        child = repo.create_child_task(conn, parent, title="Draft the post", body="brief",
                                       priority="P0", assignee_id=writer["id"])
        assert (child["status"], child["parent_id"], child["depth"], child["priority"]) == (
            "Active", parent["id"], 1, "P0")
        assert payloads(conn, child["id"], "task.created") == [{"parent_id": str(parent["id"])}]
        assert payloads(conn, parent["id"], "task.delegated") == [{
            "child_id": str(child["id"]), "title": "Draft the post",
            "assignee_id": str(writer["id"])}]
        (listed,) = repo.children_of(conn, parent["id"])
        assert (listed["id"], listed["assignee_name"]) == (child["id"], "Writer")
        # a task keeps the parent it was delegated from
        with pytest.raises(psycopg.errors.CheckViolation, match="keeps the parent"), \
                conn.transaction():
            conn.execute("UPDATE tasks SET parent_id = NULL WHERE id = %s", [child["id"]])
        # only an Active task delegates
        sql_step(conn, parent["id"], Status.WAITING)
        with pytest.raises(InvalidTransition, match="only an Active task can delegate"):
            repo.create_child_task(conn, parent, title="late")


def test_delegation_depth_is_capped_at_five_in_python_and_sql(app_pool, make_tenant):
    tenant = make_tenant("depth")
    with tx(app_pool, tenant) as conn:
        task = new_task(conn, tenant, Status.ACTIVE, title="level 0")
        for level in range(1, 6):
            task = repo.create_child_task(conn, task, title=f"level {level}")
            assert task["depth"] == level
        with pytest.raises(ValueError, match="at most 5 levels deep"):
            repo.create_child_task(conn, task, title="level 6")
        with pytest.raises(psycopg.errors.CheckViolation, match="at most 5 levels deep"), \
                conn.transaction():
            conn.execute("INSERT INTO tasks (tenant_id, title, status, parent_id) "
                         "VALUES (%s, 'x', 'Active', %s)", [tenant.id, task["id"]])
        # the depth is the tree's: a caller cannot claim a shallower one
        sneaky = conn.execute(
            "INSERT INTO tasks (tenant_id, title, parent_id, depth) VALUES (%s, 'y', %s, 1) "
            "RETURNING depth", [tenant.id, task["parent_id"]]).fetchone()
        assert sneaky["depth"] == 5


def test_a_parent_of_another_tenant_is_refused_by_the_database(app_pool, owner_dsn, make_tenant):
    a, b = make_tenant("pa"), make_tenant("pb")
    with tx(app_pool, b) as conn:
        theirs = new_task(conn, b, Status.ACTIVE)
    with tx(app_pool, a) as conn:
        mine = new_task(conn, a, Status.ACTIVE)
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            conn.execute("INSERT INTO tasks (tenant_id, title, parent_id) VALUES (%s, 'x', %s)",
                         [a.id, theirs["id"]])
        with pytest.raises(repo.NotFound):
            repo.create_child_task(conn, theirs, title="x")
    # the owner bypasses RLS: the composite key still refuses the cross-tenant parent
    with psycopg.connect(owner_dsn) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO tasks (tenant_id, title, parent_id) VALUES (%s, 'x', %s)",
                     [a.id, theirs["id"]])
    assert mine["depth"] == 0


def review(conn, task_id):
    sql_step(conn, task_id, Status.REVIEW)


def test_the_last_approval_wakes_the_waiting_parent_with_the_results(app_pool, make_tenant):
    tenant = make_tenant("wake")
    with tx(app_pool, tenant) as conn:
        parent = new_task(conn, tenant, Status.ACTIVE)
        kids = [repo.create_child_task(conn, parent, title=f"part {i}") for i in range(3)]
        repo.add_event(conn, tenant.id, kids[0]["id"], "work.result", {"reply": "first draft"})
        repo.add_event(conn, tenant.id, kids[0]["id"], "work.result", {"reply": "final draft"})
        waiting = repo.wait_for_children(conn, parent["id"])
        assert waiting["status"] == "Waiting" and waiting["claimed_by"] is None
        assert payloads(conn, parent["id"], "task.waiting") == [{"children": 3, "open": 3}]
        for kid in kids:
            review(conn, kid["id"])
        repo.review_task(conn, kids[0]["id"], True, "good")
        repo.cancel_task(conn, kids[1]["id"], "not needed")  # a cancelled child is settled
        assert repo.get_task(conn, parent["id"])["status"] == "Waiting"
        repo.move_task(conn, kids[2]["id"], Status.APPROVED)  # the board's move counts too
        assert repo.get_task(conn, parent["id"])["status"] == "Active"
        assert payloads(conn, parent["id"], "task.children_done") == [
            {"children": 3, "approved": 2, "cancelled": 1}]
        results = repo.child_results(conn, parent["id"])
    assert [(r["title"], r["status"], r["reply"]) for r in results] == [
        ("part 0", "Approved", "final draft"), ("part 1", "Cancelled", None),
        ("part 2", "Approved", None)]


def test_a_parent_whose_children_are_done_does_not_wait(app_pool, make_tenant):
    tenant = make_tenant("nowait")
    with tx(app_pool, tenant) as conn:
        parent = new_task(conn, tenant, Status.ACTIVE)
        assert repo.wait_for_children(conn, parent["id"])["status"] == "Active"  # no children
        kid = repo.create_child_task(conn, parent, title="quick")
        review(conn, kid["id"])
        repo.review_task(conn, kid["id"], True)
        before = kinds(conn, parent["id"])
        assert repo.wait_for_children(conn, parent["id"])["status"] == "Active"
        assert kinds(conn, parent["id"]) == before


def _waiting_family(pool, tenant, n=2):
    with tx(pool, tenant) as conn:
        parent = new_task(conn, tenant, Status.ACTIVE)
        kids = [repo.create_child_task(conn, parent, title=f"k{i}") for i in range(n)]
        repo.wait_for_children(conn, parent["id"])
        for kid in kids:
            review(conn, kid["id"])
    return parent, kids


def test_two_concurrent_last_approvals_wake_the_parent_exactly_once(app_pool, make_tenant):
    """The first approval holds its transaction open while the second runs: without the lock
    on the parent, each would see the other's child still in Review and neither would wake
    it; with it, the second waits for the first and sees its approval."""
    tenant = make_tenant("race")
    parent, (k1, k2) = _waiting_family(app_pool, tenant)
    first_done, errors = threading.Event(), []

    def first():
        try:
            with tx(app_pool, tenant, actor="ana") as conn:
                repo.review_task(conn, k1["id"], True)
                first_done.set()
                time.sleep(0.8)  # the second approval runs meanwhile
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
            first_done.set()

    def second():
        first_done.wait(10)
        try:
            with tx(app_pool, tenant, actor="bob") as conn:
                repo.review_task(conn, k2["id"], True)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    with tx(app_pool, tenant) as conn:
        assert repo.get_task(conn, parent["id"])["status"] == "Active"
        assert kinds(conn, parent["id"]).count("task.children_done") == 1

    # and free-running, several times: always exactly once
    for _ in range(4):
        parent, (k1, k2) = _waiting_family(app_pool, tenant)
        barrier = threading.Barrier(2)

        def approve(task_id, barrier=barrier):
            barrier.wait(5)
            with tx(app_pool, tenant) as conn:
                repo.review_task(conn, task_id, True)

        threads = [threading.Thread(target=approve, args=(k["id"],)) for k in (k1, k2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        with tx(app_pool, tenant) as conn:
            assert repo.get_task(conn, parent["id"])["status"] == "Active"
            assert kinds(conn, parent["id"]).count("task.children_done") == 1


def test_cancelling_cascades_to_open_descendants_at_any_depth(app_pool, make_tenant):
    tenant = make_tenant("cascade")
    with tx(app_pool, tenant, actor="ops") as conn:
        worker = agent(conn, tenant, "W")
        root = new_task(conn, tenant, Status.ACTIVE, title="root")
        done = repo.create_child_task(conn, root, title="done")
        review(conn, done["id"])
        repo.review_task(conn, done["id"], True)
        mid = repo.create_child_task(conn, root, title="mid")
        leaf = repo.create_child_task(conn, mid, title="leaf")
        gated = repo.create_child_task(conn, mid, title="gated")
        approval = repo.request_approval(conn, gated, agent_id=worker["id"], tool="http_post",
                                         arguments={"x": 1}, call_id="c1")
        repo.wait_for_children(conn, mid["id"])
        repo.wait_for_children(conn, root["id"])
        cancelled = repo.cancel_task(conn, root["id"], "launch moved")
        assert cancelled["status"] == "Cancelled"
        status = {t: repo.get_task(conn, t)["status"] for t in
                  (root["id"], done["id"], mid["id"], leaf["id"], gated["id"])}
        assert status == {root["id"]: "Cancelled", done["id"]: "Approved",
                          mid["id"]: "Cancelled", leaf["id"]: "Cancelled",
                          gated["id"]: "Cancelled"}
        assert payloads(conn, root["id"], "task.cancelled") == [
            {"reason": "launch moved", "actor": "ops"}]
        for t in (mid, leaf, gated):
            assert payloads(conn, t["id"], "task.cancelled") == [{
                "reason": "launch moved", "actor": "ops",
                "cancelled_ancestor_id": str(root["id"]), "cancelled_ancestor_title": "root"}]
        assert payloads(conn, done["id"], "task.cancelled") == []
        (row,) = repo.approvals_of(conn, gated["id"])
        assert (row["id"], row["status"], row["decided_by"]) == (approval["id"], "denied", "ops")
        assert repo.pending_approvals(conn) == []
        for final in (root, done):
            with pytest.raises(InvalidTransition, match="it is final"):
                repo.cancel_task(conn, final["id"])


def test_a_cancel_racing_an_approval_never_wakes_a_cancelled_parent(app_pool, make_tenant):
    tenant = make_tenant("cancelrace")

    def race(first_fn, second_fn):
        started, out = threading.Event(), {}

        def first():
            with tx(app_pool, tenant) as conn:
                first_fn(conn)
                started.set()
                time.sleep(0.6)

        def second():
            started.wait(10)
            try:
                with tx(app_pool, tenant) as conn:
                    second_fn(conn)
            except Exception as exc:
                out["error"] = exc

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        return out.get("error")

    # the cancel first: the approval then finds its task cancelled
    parent, (kid,) = _waiting_family(app_pool, tenant, 1)
    error = race(lambda c: repo.cancel_task(c, parent["id"]),
                 lambda c: repo.review_task(c, kid["id"], True))
    assert isinstance(error, InvalidTransition) and "from Cancelled" in str(error)
    with tx(app_pool, tenant) as conn:
        assert repo.get_task(conn, parent["id"])["status"] == "Cancelled"
        assert repo.get_task(conn, kid["id"])["status"] == "Cancelled"
        assert "task.children_done" not in kinds(conn, parent["id"])
    # the approval first: it wakes the parent, then the cancel cancels it anyway
    parent, (kid,) = _waiting_family(app_pool, tenant, 1)
    error = race(lambda c: repo.review_task(c, kid["id"], True),
                 lambda c: repo.cancel_task(c, parent["id"]))
    assert error is None
    with tx(app_pool, tenant) as conn:
        assert repo.get_task(conn, parent["id"])["status"] == "Cancelled"
        assert repo.get_task(conn, kid["id"])["status"] == "Approved"


def test_reject_sends_the_task_back_to_work_with_the_comment_and_fresh_attempts(
        app_pool, make_tenant):
    tenant = make_tenant("reject")
    with tx(app_pool, tenant, actor="ui:ada") as conn:
        task = new_task(conn, tenant, Status.ACTIVE)
        conn.execute("UPDATE tasks SET attempts = 2, last_error = 'x' WHERE id = %s",
                     [task["id"]])
        review(conn, task["id"])
        with pytest.raises(ValueError, match="say what to change"):
            repo.review_task(conn, task["id"], False, "  ")
        reworked = repo.review_task(conn, task["id"], False, "Cite the runbook")
        assert (reworked["status"], reworked["attempts"], reworked["last_error"]) == (
            "Active", 0, None)
        events = repo.list_events(conn, task_id=task["id"])
    tail = [(e["kind"], e["payload"].get("comment"),
             e["payload"].get("changes", {}).get("status")) for e in events[-3:]]
    assert tail == [("review.rejected", "Cite the runbook", None),
                    ("status_changed", None, ["Review", "Rejected"]),
                    ("status_changed", None, ["Rejected", "Active"])]
    assert events[-3]["payload"]["actor"] == "ui:ada"


# -- paused runs and tool approvals -----------------------------------------------------------

def test_pause_and_resume(app_pool, make_tenant):
    tenant = make_tenant("pause")
    with tx(app_pool, tenant) as conn:
        task = new_task(conn, tenant, Status.ACTIVE)
    assert claim_next(app_pool, tenant.id, "w/pause")["id"] == task["id"]
    with tx(app_pool, tenant, actor="engine") as conn:
        paused = repo.pause_task(conn, task["id"], "same call 3 times")
        assert (paused["status"], paused["claimed_by"]) == ("Paused", None)
        assert payloads(conn, task["id"], "task.paused") == [{"reason": "same call 3 times"}]
        with pytest.raises(InvalidTransition):
            repo.pause_task(conn, task["id"], "again")
    assert claim_next(app_pool, tenant.id, "w/pause") is None, "a Paused task is never claimed"
    with tx(app_pool, tenant, actor="ops") as conn:
        resumed = repo.move_task(conn, task["id"], Status.ACTIVE)  # the board's move resumes
        assert resumed["status"] == "Active"
        assert payloads(conn, task["id"], "task.resumed") == [
            {"paused_reason": "same call 3 times", "actor": "ops"}]
        with pytest.raises(InvalidTransition, match="only a Paused task can be resumed"):
            repo.resume_task(conn, task["id"])
    assert claim_next(app_pool, tenant.id, "w/pause")["id"] == task["id"]


@pytest.mark.parametrize("approve", [True, False])
def test_an_approval_pauses_the_run_until_an_operator_decides(app_pool, make_tenant, approve):
    tenant = make_tenant("approval")
    with tx(app_pool, tenant) as conn:
        cto = agent(conn, tenant, "CTO")
        task = new_task(conn, tenant, Status.ACTIVE, assignee_id=cto["id"])
    with tx(app_pool, tenant, actor="worker:w") as conn:
        approval = repo.request_approval(
            conn, task, agent_id=cto["id"], tool="delegate",
            arguments={"to": "Writer", "title": "Draft the launch post " * 10}, call_id="toolu_1")
        assert (approval["status"], approval["call_id"], approval["decided_at"]) == (
            "pending", "toolu_1", None)
        row = repo.get_task(conn, task["id"])
        assert row["status"] == "Paused"
        assert row["paused_reason"].startswith('waiting for approval: delegate("title":"Draft')
        assert row["paused_reason"].endswith("…)") and len(row["paused_reason"]) < 120
        (requested,) = payloads(conn, task["id"], "approval.requested")
        assert requested["approval_id"] == str(approval["id"]) and requested["tool"] == "delegate"
        # at most one pending per task: refused in Python (the task is Paused) and in SQL
        with pytest.raises(InvalidTransition), conn.transaction():
            repo.request_approval(conn, row, agent_id=cto["id"], tool="x", arguments={},
                                  call_id="c2")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO tool_approvals (tenant_id, task_id, agent_id, tool) "
                         "VALUES (%s, %s, %s, 'x')", [tenant.id, task["id"], cto["id"]])
    with tx(app_pool, tenant, actor="ops") as conn:
        with pytest.raises(ValueError, match="waits for a decision on its call of 'delegate'"):
            repo.resume_task(conn, task["id"])
        (pending,) = repo.pending_approvals(conn)
        assert (pending["task_title"], pending["agent_name"]) == (task["title"], "CTO")
        decided = repo.decide_approval(conn, approval["id"], approve, "ok" if approve else "")
        assert decided["status"] == ("approved" if approve else "denied")
        assert (decided["decided_by"], decided["task"]["status"]) == ("ops", "Active")
        assert decided["decided_at"] is not None
        kind = "approval.approved" if approve else "approval.denied"
        assert payloads(conn, task["id"], kind) == [{
            "approval_id": str(approval["id"]), "tool": "delegate",
            "comment": "ok" if approve else "", "actor": "ops"}]
        assert repo.get_task(conn, task["id"])["paused_reason"] is None
        with pytest.raises(InvalidTransition, match="already"):
            repo.decide_approval(conn, approval["id"], not approve)
        with pytest.raises(psycopg.errors.CheckViolation, match="already decided"), \
                conn.transaction():
            conn.execute("UPDATE tool_approvals SET status = 'pending', decided_at = NULL "
                         "WHERE id = %s", [approval["id"]])
        with pytest.raises(repo.NotFound):
            repo.decide_approval(conn, uuid.uuid4(), True)
        assert repo.pending_approvals(conn) == []
        # a new gated call after the decision is fine again
        again = repo.request_approval(conn, repo.get_task(conn, task["id"]),
                                      agent_id=cto["id"], tool="delegate", arguments={},
                                      call_id="toolu_2")
        assert [a["id"] for a in repo.approvals_of(conn, task["id"])] == [
            again["id"], approval["id"]]


# -- agents paused by their failure streak ----------------------------------------------------

def test_a_failure_streak_pauses_the_agent_and_the_worker_skips_its_tasks(app_pool,
                                                                         make_tenant):
    tenant = make_tenant("streak")
    with tx(app_pool, tenant) as conn:
        flaky = agent(conn, tenant, "Flaky")
        steady = agent(conn, tenant, "Steady")
        assert repo.note_task_outcome(conn, flaky["id"], False, 3) is False
        assert repo.note_task_outcome(conn, flaky["id"], True, 3) is False  # reached Review
        assert repo.get_agent(conn, flaky["id"])["failure_streak"] == 0
        assert [repo.note_task_outcome(conn, flaky["id"], False, 3) for _ in range(4)] == [
            False, False, True, False]
        paused = repo.get_agent(conn, flaky["id"])
        assert paused["paused_reason"] == "failed 3 tasks in a row"
        assert paused["failure_streak"] == 4 and paused["paused_at"] is not None
        urgent = new_task(conn, tenant, Status.ACTIVE, title="urgent", priority="P0",
                          assignee_id=flaky["id"])
        later = new_task(conn, tenant, Status.ACTIVE, title="later", priority="P2",
                         assignee_id=steady["id"])
    worked = []
    worker = Worker(app_pool, "w/streak", lambda task: worked.append(task["title"]) or {})
    assert worker.run_once(tenant.id) is True
    assert worker.run_once(tenant.id) is False, "the paused agent's task was claimed"
    assert worked == ["later"]
    with tx(app_pool, tenant) as conn:
        row = repo.get_task(conn, urgent["id"])
        assert (row["status"], row["assignee_id"], row["claimed_by"]) == (
            "Active", flaky["id"], None)  # skipped, not routed away
        assert repo.get_task(conn, later["id"])["status"] == "Review"
        resumed = repo.resume_agent(conn, flaky["id"])
        assert (resumed["paused_at"], resumed["paused_reason"], resumed["failure_streak"]) == (
            None, None, 0)
        with pytest.raises(InvalidTransition, match="is not paused"):
            repo.resume_agent(conn, flaky["id"])
        with pytest.raises(repo.NotFound):
            repo.resume_agent(conn, uuid.uuid4())
    assert worker.run_once(tenant.id) is True
    assert worked == ["later", "urgent"]


def test_unassigned_work_routed_to_a_paused_orchestrator_waits(app_pool, make_tenant):
    tenant = make_tenant("pausedorch")
    with tx(app_pool, tenant) as conn:
        boss = agent(conn, tenant, "Boss")
        repo.pause_agent(conn, boss["id"], "failed 3 tasks in a row")
        task = new_task(conn, tenant, Status.ACTIVE)
    worker = Worker(app_pool, "w/orch", lambda task: {}, route_unassigned=True)
    assert worker.run_once(tenant.id) is False
    with tx(app_pool, tenant) as conn:
        row = repo.get_task(conn, task["id"])
        assert (row["status"], row["assignee_id"], row["claimed_by"]) == (
            "Active", boss["id"], None)
        repo.resume_agent(conn, boss["id"])
    assert worker.run_once(tenant.id) is True
    assert worker.stats["routed"] == 1 and worker.stats["worked"] == 1


# -- the inbox and the task detail ------------------------------------------------------------

def test_the_inbox_lists_what_waits_for_an_operator_oldest_first(app_pool, make_tenant):
    tenant = make_tenant("inbox")
    with tx(app_pool, tenant) as conn:
        assert repo.inbox(conn) == {"approvals": [], "reviews": [], "paused_tasks": [],
                                    "paused_agents": []}
        assert repo.inbox_count(conn) == 0
        cto = agent(conn, tenant, "CTO")
        idle = agent(conn, tenant, "Idle")
        first = new_task(conn, tenant, Status.REVIEW, title="first review", assignee_id=cto["id"])
    with tx(app_pool, tenant) as conn:  # a later transaction: a later updated_at
        second = new_task(conn, tenant, Status.REVIEW, title="second review")
        broken = new_task(conn, tenant, Status.ACTIVE, title="breaker")
        repo.pause_task(conn, broken["id"], "token cap reached")
        gated = new_task(conn, tenant, Status.ACTIVE, title="gated")
        approval = repo.request_approval(conn, gated, agent_id=cto["id"], tool="deploy",
                                         arguments={"env": "prod"}, call_id="c")
        repo.pause_agent(conn, idle["id"], "failed 3 tasks in a row")
        new_task(conn, tenant, Status.ACTIVE, title="just working")
    with tx(app_pool, tenant) as conn:
        box = repo.inbox(conn)
        count = repo.inbox_count(conn)
    assert [a["id"] for a in box["approvals"]] == [approval["id"]]
    assert [(t["id"], t["assignee_name"]) for t in box["reviews"]] == [
        (first["id"], "CTO"), (second["id"], None)]
    assert [t["id"] for t in box["paused_tasks"]] == [broken["id"]]  # not the gated one
    assert box["paused_tasks"][0]["paused_reason"] == "token cap reached"
    assert [a["name"] for a in box["paused_agents"]] == ["Idle"]
    assert count == 5


def test_task_detail_shows_the_tree_and_the_approvals(app_pool, make_tenant):
    tenant = make_tenant("detail")
    with tx(app_pool, tenant) as conn:
        lead = agent(conn, tenant, "Lead")
        parent = new_task(conn, tenant, Status.ACTIVE, title="parent")
        kid = repo.create_child_task(conn, parent, title="kid", assignee_id=lead["id"])
        approval = repo.request_approval(conn, kid, agent_id=lead["id"], tool="t",
                                         arguments={}, call_id="c")
        top = repo.task_detail(conn, parent["id"])
        below = repo.task_detail(conn, kid["id"])
    assert (top["parent_id"], top["parent"], top["approvals"]) == (None, None, [])
    assert [(c["id"], c["title"], c["status"], c["assignee_name"]) for c in top["children"]] \
        == [(kid["id"], "kid", "Paused", "Lead")]
    assert below["parent_id"] == parent["id"] and below["children"] == []
    assert below["parent"] == {"id": parent["id"], "title": "parent", "status": "Active"}
    assert [(a["id"], a["agent_name"]) for a in below["approvals"]] == [(approval["id"], "Lead")]
    assert below["paused_reason"] == "waiting for approval: t()"


# -- row-level security -----------------------------------------------------------------------

def test_another_tenant_sees_none_of_the_new_rows(app_pool, make_tenant):
    a, b = make_tenant("rls-a"), make_tenant("rls-b")
    with tx(app_pool, a) as conn:
        ag = agent(conn, a, "A")
        parent = new_task(conn, a, Status.ACTIVE)
        kid = repo.create_child_task(conn, parent, title="secret child")
        approval = repo.request_approval(conn, kid, agent_id=ag["id"], tool="t",
                                         arguments={"secret": 1}, call_id="c")
        repo.pause_agent(conn, ag["id"], "failed 3 tasks in a row")
        new_task(conn, a, Status.REVIEW)
        assert repo.inbox_count(conn) == 3
    with tx(app_pool, b) as conn:
        assert conn.execute("SELECT count(*) AS n FROM tool_approvals").fetchone()["n"] == 0
        assert conn.execute("SELECT count(*) AS n FROM tasks WHERE parent_id IS NOT NULL"
                            ).fetchone()["n"] == 0
        assert repo.children_of(conn, parent["id"]) == []
        assert repo.child_results(conn, parent["id"]) == []
        assert repo.pending_approvals(conn) == [] and repo.inbox_count(conn) == 0
        assert repo.inbox(conn)["paused_agents"] == []
        with pytest.raises(repo.NotFound):
            repo.decide_approval(conn, approval["id"], True)
        with pytest.raises(repo.NotFound):
            repo.cancel_task(conn, parent["id"])
        with pytest.raises(repo.NotFound):
            repo.resume_agent(conn, ag["id"])
        assert conn.execute("UPDATE tool_approvals SET comment = 'x'").rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        with tx(app_pool, b) as conn:
            conn.execute("INSERT INTO tool_approvals (tenant_id, task_id, agent_id, tool) "
                         "VALUES (%s, %s, %s, 't')", [a.id, kid["id"], ag["id"]])
    with tx(app_pool, a) as conn:
        assert repo.get_task(conn, kid["id"])["status"] == "Paused"
        assert len(repo.pending_approvals(conn)) == 1
