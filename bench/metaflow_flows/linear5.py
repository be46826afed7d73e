"""Five trivial steps in a chain: the Metaflow twin of bench/notebooks/linear5.ipynb.

The last step fails while the file `fail_marker` exists; `sleep_s` makes every step take that long.

bench/resume.py runs it with a marker file, deletes the file, then resumes it.
"""
import os
import time

from metaflow import FlowSpec, Parameter, step


class Linear5Flow(FlowSpec):
    fail_marker = Parameter("fail_marker", default="")
    sleep_s = Parameter("sleep_s", default=0.0)

    @step
    def start(self):
        time.sleep(self.sleep_s)
        self.a = 2
        self.next(self.b)

    @step
    def b(self):
        time.sleep(self.sleep_s)
        self.b_value = self.a * 2
        self.next(self.c)

    @step
    def c(self):
        time.sleep(self.sleep_s)
        self.c_value = self.b_value + 3
        self.next(self.d)

    @step
    def d(self):
        time.sleep(self.sleep_s)
        self.d_value = self.c_value * 10
        self.next(self.end)

    @step
    def end(self):
        time.sleep(self.sleep_s)
        if self.fail_marker and os.path.exists(self.fail_marker):
            raise RuntimeError(f"failing on purpose while {self.fail_marker} exists")
        self.e = self.d_value - 1


if __name__ == "__main__":
    Linear5Flow()
