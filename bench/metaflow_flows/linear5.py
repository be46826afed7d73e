"""Five trivial steps in a chain, passing one int: the Metaflow twin of bench/notebooks/linear5.ipynb."""
from metaflow import FlowSpec, Parameter, step


class Linear5Flow(FlowSpec):
    start_value = Parameter("start_value", default=1)

    @step
    def start(self):
        self.a = self.start_value + 1
        self.next(self.b)

    @step
    def b(self):
        self.b_value = self.a * 2
        self.next(self.c)

    @step
    def c(self):
        self.c_value = self.b_value + 3
        self.next(self.d)

    @step
    def d(self):
        self.d_value = self.c_value * 10
        self.next(self.end)

    @step
    def end(self):
        self.e = self.d_value - 1


if __name__ == "__main__":
    Linear5Flow()
