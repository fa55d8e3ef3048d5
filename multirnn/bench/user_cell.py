"""An LSTM written the way a user writes a cell (``multirnn.Cell``), for the benchmark.

It computes the built-in LSTM's formula (gates i, f, c, o; the gate activation as a
hyperparameter) in one plain ``step``, with no hand-written backward pass: the
``multirnn:NAME+cell`` contenders time it through ``RNN(cell)`` against the built-in
layer, which is how much a user pays for bringing their own cell.
"""

from __future__ import annotations

from multirnn.cells import Cell


class UserLSTM(Cell):
    """``UserLSTM(units, gate="hard_sigmoid")``: weights in the built-in LSTM's layout."""

    state_names = ("h", "c")

    def build(self, input_dim):
        u = self.units
        self.add_weight("kernel", (input_dim, 4 * u))
        self.add_weight("recurrent_kernel", (u, 4 * u), initializer="orthogonal")
        self.add_weight("bias", (4 * u,), initializer="zeros")

    def step(self, ops, w, x, states):
        h, c = states
        u = self.units
        gate = ops.activation(getattr(self, "gate", "hard_sigmoid"))
        z = x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"]
        i, f, g, o = (z[:, k * u : (k + 1) * u] for k in range(4))
        c = gate(f) * c + gate(i) * ops.tanh(g)
        h = gate(o) * ops.tanh(c)
        return h, (h, c)
