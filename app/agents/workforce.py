"""The agent workforce: the handler the dispatch worker runs for an agent's task.

`Workforce` is the run loop of app/agents/run.py (`AgentRunner`): for a claimed task it
loads the assignee's persona, tools and limits, retrieves the top passages for the task under
the token budget, and works the task through the agent's chain turn by turn (tool calls,
delegation, approvals, circuit breakers) until a result. A task without an agent raises
NotWorkable (back to Draft); a budget denial parks it (TaskParked); a pause or delegated work
holds it (TaskHeld). Run the worker with `route_unassigned=True` (unassigned tasks reach the
orchestrator first) and `on_settled=workforce.on_settled` (failure streaks).

Example:
    workforce = Workforce(pool, router, system_prompt=SYSTEM, tools=TOOLS)
    Worker(pool, worker_id="host-a/1", handler=workforce.handle, route_unassigned=True,
           on_settled=workforce.on_settled).run_once(tenant_id)
"""

from app.agents.run import AgentRunner, Breakers, RunPolicy, TaskNotAssigned

Workforce = AgentRunner

__all__ = ["Breakers", "RunPolicy", "TaskNotAssigned", "Workforce"]
