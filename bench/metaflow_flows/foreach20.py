"""A 20-way foreach of trivial tasks and a join: the twin of bench/notebooks/foreach20.ipynb.

Metaflow needs a separate join step and an `end` step, so it runs 23 tasks where jupyter_flow runs 22.
"""
from metaflow import FlowSpec, Parameter, step


class Foreach20Flow(FlowSpec):
    n = Parameter("n", default=20)

    @step
    def start(self):
        self.items = list(range(self.n))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.y = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(task.y for task in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    Foreach20Flow()
