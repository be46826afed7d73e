"""Which tasks may start: the state of every step of a run, propagated in topological order.

Each step counts its upstream steps that are not done yet. A step that ends releases its dependents
(the last upstream one to end makes a dependent ready) or, if it failed and is not tagged `catch`,
dooms everything downstream of it. Every step is visited a bounded number of times over the whole
run, so a run of n steps costs O(n + edges) here, however the DAG is shaped.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from jupyter_flow.execution.control import TaskControl
from jupyter_flow.flow.dag import Flow
from jupyter_flow.store.status import DONE, TERMINAL, Status


@dataclass
class Task:
    step: str
    index: int
    status: str = Status.QUEUED
    attempt: int = 0
    record: dict = field(default_factory=dict)
    control: TaskControl | None = None
    attempts: list = field(default_factory=list)


class Readiness:
    def __init__(self, flow: Flow):
        self.flow = flow
        steps = flow.steps
        self.upstream = {n: set(s.prev) | set(s.inputs.values()) for n, s in steps.items()}
        self.downstream: dict[str, list[str]] = {n: [] for n in steps}
        for name, ups in self.upstream.items():
            for u in ups:
                self.downstream[u].append(name)
        # kernel each step wants from the executor's pool; None: a `pip:` step starts its own
        self.kernel = {n: None if "pip" in s.options else s.options.get("kernel", flow.kernel)
                       for n, s in steps.items()}
        self.tasks: dict[str, list[Task] | None] = {n: None for n in steps}  # None: not ready (fan-out unknown)
        self.state = {n: "pending" for n in steps}  # pending, done (downstream may run), blocked (it failed)
        self.doomed: set[str] = set()  # pending steps downstream of a blocked one: they will never run
        self._missing = {n: len(ups) for n, ups in self.upstream.items()}  # upstream steps not done yet
        self._open: dict[str, int] = {}  # step -> its tasks not ended yet
        self.ready: deque[str] = deque(n for n, count in self._missing.items() if count == 0)
        self.queued: deque[Task] = deque()  # tasks to start, in the order their steps became ready
        self._waiting = Counter(self.kernel.values())  # kernel -> steps not started and not doomed
        self._queued = Counter()  # kernel -> tasks in `queued`

    # -- the runner tells it what happened -------------------------------------------------------
    def add_tasks(self, name: str, tasks: list[Task]) -> None:
        """`name` is ready and these are its tasks (a fan-out's count is known only now)."""
        self.tasks[name] = tasks
        self._waiting[self.kernel[name]] -= 1
        self._open[name] = sum(t.status not in TERMINAL for t in tasks)
        for task in tasks:
            if task.status == Status.QUEUED:
                self.enqueue(task)
        if not self._open[name]:
            self._step_ended(name)

    def enqueue(self, task: Task) -> None:
        self.queued.append(task)
        self._queued[self.kernel[task.step]] += 1

    def next_task(self) -> Task:
        task = self.queued.popleft()
        self._queued[self.kernel[task.step]] -= 1
        return task

    def task_ended(self, task: Task) -> None:
        """`task` reached a terminal status (after its last retry)."""
        self._open[task.step] -= 1
        if not self._open[task.step]:
            self._step_ended(task.step)

    def _step_ended(self, name: str) -> None:
        tasks = self.tasks[name]
        if all(t.status in DONE for t in tasks) or self.flow.steps[name].options.get("catch"):
            self.state[name] = "done"
            for d in self.downstream[name]:
                self._missing[d] -= 1
                if not self._missing[d] and d not in self.doomed:
                    self.ready.append(d)
        else:
            self.state[name] = "blocked"
            self._doom(name)

    def _doom(self, name: str) -> None:
        stack = list(self.downstream[name])
        while stack:
            d = stack.pop()
            if d not in self.doomed:  # each step is doomed once, its descendants explored once
                self.doomed.add(d)
                self._waiting[self.kernel[d]] -= 1
                stack += self.downstream[d]

    # -- what the runner asks --------------------------------------------------------------------
    def waiting(self) -> dict[str, int]:
        """kernel -> tasks that will want one and are not submitted (a step not ready counts one)."""
        return {k: self._waiting[k] + self._queued[k] for k in self._waiting}

    def all_done(self) -> bool:
        return all(s == "done" for s in self.state.values())
