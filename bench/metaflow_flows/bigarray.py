"""One step makes `n_mb` MB of random float64, the next reads it: twin of bigarray.ipynb.

bench/overhead.py passes a new `seed` each repetition, so no store can skip the write as a duplicate.
"""
from metaflow import FlowSpec, Parameter, step


class BigArrayFlow(FlowSpec):
    n_mb = Parameter("n_mb", default=500)
    seed = Parameter("seed", default=0)

    @step
    def start(self):
        import numpy as np

        self.arr = np.random.default_rng(self.seed).random(self.n_mb * 2**20 // 8)
        self.next(self.end)

    @step
    def end(self):
        self.total = float(self.arr.sum())


if __name__ == "__main__":
    BigArrayFlow()
