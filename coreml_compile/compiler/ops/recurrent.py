"""Recurrent layers: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``, lowered to Core ML's
``lstm``, ``gru`` and ``rnn`` ops (one MIL op per layer and direction, never unrolled),
except a GRU before iOS18 (below).

The records take what the ATen ops take (``aten::lstm.input`` and friends):

- ``weights``: torch's flat weight list, per layer and within a layer per direction
  (forward, then reverse): ``w_ih, w_hh`` and, with ``has_biases``, ``b_ih, b_hh``.
  Gate rows are in torch's order: LSTM (i, f, g, o), GRU (r, z, n);
- ``x``: (seq, batch, input), or (batch, seq, input) with ``batch_first``;
- ``h0`` (and the LSTM's ``c0``): (layers * directions, batch, hidden);
- outputs: the last layer's hidden states for every step (directions concatenated),
  and the final ``h_n`` (and ``c_n``), as torch returns them.

Facts the lowering rests on (coremltools 9, ``mil/ops/defs/iOS15/recurrent.py`` and the
device-run numpy references in its op tests):

- MIL's lstm orders gate rows (i, f, o, g), takes one bias (b_ih + b_hh), and runs
  ``direction="bidirectional"`` in one op: initial states (batch, 2 * hidden), forward
  half first; outputs aligned with the input's time steps, as torch's.
- A ``direction="reverse"`` run (gru, rnn) emits its outputs in the order it processes
  the steps (last time step first): the lowering flips them back.
- MIL's rnn is torch's: act(W_ih x + W_hh h + b) with b = b_ih + b_hh.
- MIL's gru orders gate rows (r, o, z) with o torch's n. Before iOS18 it applies the
  reset gate before the hidden product, ``W_ho (r * h)``; torch applies it after,
  ``r * (W_hn h + b_hn)``: not the same function. iOS18's ``reset_after=True`` (with
  ``input_bias`` = b_ih, ``bias`` = b_hh) is torch's form; before iOS18 a GRU is lowered
  step by step (one ``linear`` for all steps' input products, then per step a ``linear``
  on the state and the gate arithmetic), exact but the size of the sequence.
- Before iOS17 these ops compute in fp32 only: an fp16 program casts around them.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler.ops import Op

# Block order of MIL's gate rows, as indices into torch's.
_LSTM_GATES = (0, 1, 3, 2)  # torch (i, f, g, o) -> MIL (i, f, o, g)
_GRU_GATES = (0, 2, 1)  # torch (r, z, n) -> MIL (r, n, z)
_RNN_GATES = (0,)

_RECURRENT_ATTRS = {
    "has_biases": True,
    "num_layers": 1,
    "dropout": 0.0,
    "train": False,
    "bidirectional": False,
    "batch_first": False,
}


def _random(node) -> bool:
    """Dropout between stacked layers is random in training mode."""
    a = node.attrs
    return bool(a["train"]) and a["dropout"] > 0 and a["num_layers"] > 1


def _check(node, generation, states: int) -> str | None:
    """What Core ML's recurrent ops cannot express (``states``: 2 for LSTM, else 1)."""
    a = node.attrs
    weights = node.inputs[: len(node.inputs) - 1 - states]
    x, h0 = node.inputs[len(weights)], node.inputs[len(weights) + 1]
    directions = 2 if a["bidirectional"] else 1
    per_direction = 4 if a["has_biases"] else 2
    groups = a["num_layers"] * directions
    if len(weights) == groups * (per_direction + 1):
        return "LSTM projections (proj_size) have no Core ML form"
    if len(weights) != groups * per_direction:
        return f"{len(weights)} weights for {groups} layer direction(s)"
    if x.type.rank != 3 or h0.type.rank != 3:
        return "input and states must be batched (rank 3)"
    if x.type.dtype not in ("float32", "float16"):
        return f"{x.type.dtype} input (Core ML's recurrent ops take float tensors)"
    if 0 in x.type.shape:
        return f"empty input {x.type} (Core ML has no zero-size tensors)"
    if not all(w.is_constant for w in weights):
        return "weights computed in the graph (Core ML's recurrent ops take constant weights)"
    if _random(node):
        return "dropout between layers in training mode is random"
    return None


class _Lowering:
    """What the three lowerings share: the operands in the dtype the op computes in,
    weights re-laid out for MIL, per-layer initial states, outputs cast back."""

    def __init__(self, c, states: int, gates: tuple[int, ...], fp16_from: int = 17):
        node = c.node
        a = node.attrs
        self.c = c
        self.mb = c.mb
        self.gates = gates
        self.directions = 2 if a["bidirectional"] else 1
        self.has_biases = a["has_biases"]
        fixed = 1 + states
        self.weights = [v.data for v in node.inputs[: len(node.inputs) - fixed]]
        self.hidden = self.weights[1].shape[1]
        # Before iOS17, Core ML's lstm/gru/rnn compute in fp32 only.
        self.dtype = c.precision if c.generation >= fp16_from else "fp32"
        self.np_dtype = np.float16 if self.dtype == "fp16" else np.float32
        self.operands = [self._operand(v, f"in{i}") for i, v in enumerate(node.inputs[-fixed:])]

    def _operand(self, value, tag: str):
        """A tensor input in the op's dtype (a constant stays a numpy array)."""
        if value.is_constant:
            return np.asarray(value.data).astype(self.np_dtype)
        var = self.c.get(value)
        if self.c.mil_dtype_of(var) == self.dtype:
            return var
        return self.mb.cast(x=var, dtype=self.dtype, name=f"{self.c.name}_{tag}_{self.dtype}")

    def layer(self, layer: int, direction: int) -> dict[str, np.ndarray | None]:
        """One layer direction's weights and biases, gate blocks in the MIL op's order."""
        per = 4 if self.has_biases else 2
        start = (layer * self.directions + direction) * per
        w_ih, w_hh = self.weights[start], self.weights[start + 1]
        b_ih, b_hh = (
            (self.weights[start + 2], self.weights[start + 3]) if per == 4 else (None, None)
        )
        return {
            "weight_ih": self._gates(w_ih),
            "weight_hh": self._gates(w_hh),
            "b_ih": None if b_ih is None else self._gates(b_ih),
            "b_hh": None if b_hh is None else self._gates(b_hh),
        }

    def _gates(self, array: np.ndarray) -> np.ndarray:
        blocks = np.split(np.asarray(array, dtype=np.float32), len(self.gates))
        return np.ascontiguousarray(np.concatenate([blocks[g] for g in self.gates]))

    def cast(self, array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array.astype(self.np_dtype)

    def state(self, h0, index: int, count: int, tag: str):
        """``h0[index : index + count]`` as (batch, count * hidden), MIL's state layout."""
        if isinstance(h0, np.ndarray):
            part = h0[index : index + count]
            return np.ascontiguousarray(np.concatenate(list(part), axis=-1))
        mb, name = self.mb, f"{self.c.name}_{tag}"
        batch = h0.shape[1]
        end = [index + count, batch, self.hidden]
        if count == 1:
            return mb.slice_by_index(
                x=h0, begin=[index, 0, 0], end=end, squeeze_mask=[True, False, False], name=name
            )
        part = mb.slice_by_index(x=h0, begin=[index, 0, 0], end=end, name=name + "_slice")
        part = mb.transpose(x=part, perm=[1, 0, 2], name=name + "_transpose")
        return mb.reshape(x=part, shape=[batch, count * self.hidden], name=name)

    def finish(self, var, i: int, tag: str):
        """Output ``i`` of the node, cast back to the program's dtype."""
        c = self.c
        want = c.mil_dtype(c.node.outputs[i].type.dtype)
        if c.mil_dtype_of(var) == want:
            return var
        name = c.name if i == 0 else f"{c.name}_{tag}"
        return self.mb.cast(x=var, dtype=want, name=name)


def _time_major(c, x, batch_first: bool):
    if not batch_first:
        return x
    return c.mb.transpose(x=x, perm=[1, 0, 2], name=f"{c.name}_time_major")


def _batch_major(c, y, batch_first: bool):
    if not batch_first:
        return y
    return c.mb.transpose(x=y, perm=[1, 0, 2], name=f"{c.name}_batch_major")


def _in_time_order(c, y, reverse: bool, tag: str):
    """A reverse run emits its steps last-first: back into time order."""
    if not reverse:
        return y
    return c.mb.reverse(x=y, axes=[0], name=f"{c.name}_{tag}_in_time_order")


def _gru_steps(c, low: _Lowering):
    """torch's GRU step by step, for targets whose gru op is not torch's: the input
    products of all steps in one ``linear``, then per step one ``linear`` on the state
    and the gate arithmetic. Gate blocks stay in torch's (r, z, n) order."""
    mb, hidden = c.mb, low.hidden

    def run(w, x, h, d, tag):
        name = f"{c.name}_{tag}"
        steps, batch = x.shape[0], x.shape[1]
        zeros = np.zeros(3 * hidden, np.float32)
        b_ih = w["b_ih"] if w["b_ih"] is not None else zeros
        b_hh = w["b_hh"] if w["b_hh"] is not None else zeros
        w_hh, b_hh = low.cast(w["weight_hh"]), low.cast(b_hh)
        w_ih, b_ih = low.cast(w["weight_ih"]), low.cast(b_ih)
        xs = mb.linear(x=x, weight=w_ih, bias=b_ih, name=name + "_x")
        outs = [None] * steps
        for t in range(steps - 1, -1, -1) if d else range(steps):
            n_ = f"{name}_t{t}"
            xt = mb.slice_by_index(
                x=xs,
                begin=[t, 0, 0],
                end=[t + 1, batch, 3 * hidden],
                squeeze_mask=[True, False, False],
                name=n_ + "_x",
            )
            ht = mb.linear(x=h, weight=w_hh, bias=b_hh, name=n_ + "_h")
            x_rz, x_n = mb.split(x=xt, split_sizes=[2 * hidden, hidden], axis=1, name=n_ + "_xs")
            h_rz, h_n = mb.split(x=ht, split_sizes=[2 * hidden, hidden], axis=1, name=n_ + "_hs")
            rz = mb.sigmoid(x=mb.add(x=x_rz, y=h_rz, name=n_ + "_rz_in"), name=n_ + "_rz")
            r, z = mb.split(x=rz, num_splits=2, axis=1, name=n_ + "_r_z")
            reset = mb.mul(x=r, y=h_n, name=n_ + "_reset")
            n = mb.tanh(x=mb.add(x=x_n, y=reset, name=n_ + "_n_in"), name=n_ + "_n")
            # (1 - z) * n + z * h  ==  n + z * (h - n)
            keep = mb.mul(x=z, y=mb.sub(x=h, y=n, name=n_ + "_diff"), name=n_ + "_keep")
            h = mb.add(x=n, y=keep, name=n_)
            outs[t] = h
        if steps == 1:
            return mb.expand_dims(x=outs[0], axes=[0], name=name), h
        return mb.stack(values=outs, axis=0, name=name), h

    return run


def _per_direction_layers(c, low: _Lowering, x, h0, run, batch_first):
    """GRU and RNN: ``run`` per layer and direction, which returns that direction's
    outputs in time order and its final state. Returns (output, h_n)."""
    mb = c.mb
    x = _time_major(c, x, batch_first)
    finals = []
    layers = len(low.weights) // ((4 if low.has_biases else 2) * low.directions)
    for layer in range(layers):
        outs = []
        for d in range(low.directions):
            index = layer * low.directions + d
            tag = f"l{layer}" + ("_reverse" if d else "")
            y, h = run(low.layer(layer, d), x, low.state(h0, index, 1, f"{tag}_h0"), d, tag)
            outs.append(y)
            finals.append(h)
        if len(outs) == 1:
            x = outs[0]
        else:
            x = mb.concat(values=outs, axis=2, name=f"{c.name}_l{layer}_concat")
    y = _batch_major(c, x, batch_first)
    if len(finals) == 1:
        h_n = mb.expand_dims(x=finals[0], axes=[0], name=f"{c.name}_hn")
    else:
        h_n = mb.stack(values=finals, axis=0, name=f"{c.name}_hn")
    return low.finish(y, 0, "y"), low.finish(h_n, 1, "hn")


class LSTM(Op):
    """torch's LSTM (``aten::lstm.input``): stacked, bidirectional, batch-first layers.

    Lowered to one MIL ``lstm`` per layer (bidirectional layers as one op); LSTM
    projections (``proj_size``) have no Core ML form and run on torch.
    """

    name = "lstm"
    inputs = ("*weights", "x", "h0", "c0")
    attrs = dict(_RECURRENT_ATTRS)
    num_outputs = 3
    lowers_from_data = True
    nondeterministic = _random
    accelerated = "matmul"

    def macs(node):
        return _macs(node, 2)

    def kernel(
        weights, x, h0, c0, *, has_biases, num_layers, dropout, train, bidirectional, batch_first
    ):
        return tuple(
            torch.ops.aten.lstm.input(
                x,
                [h0, c0],
                list(weights),
                has_biases,
                num_layers,
                dropout,
                train,
                bidirectional,
                batch_first,
            )
        )

    def lower(
        c, weights, x, h0, c0, *, has_biases, num_layers, dropout, train, bidirectional, batch_first
    ):
        mb = c.mb
        low = _Lowering(c, states=2, gates=_LSTM_GATES)
        x, h0, c0 = low.operands
        x = _time_major(c, x, batch_first)
        directions = low.directions
        finals_h, finals_c = [], []
        for layer in range(num_layers):
            fw = low.layer(layer, 0)
            kwargs = {
                "weight_ih": low.cast(fw["weight_ih"]),
                "weight_hh": low.cast(fw["weight_hh"]),
                "direction": "forward",
            }
            if has_biases:
                kwargs["bias"] = low.cast(fw["b_ih"] + fw["b_hh"])
            if bidirectional:
                bw = low.layer(layer, 1)
                kwargs["direction"] = "bidirectional"
                kwargs["weight_ih_back"] = low.cast(bw["weight_ih"])
                kwargs["weight_hh_back"] = low.cast(bw["weight_hh"])
                if has_biases:
                    kwargs["bias_back"] = low.cast(bw["b_ih"] + bw["b_hh"])
            first = layer * directions
            x, h, cell = mb.lstm(
                x=x,
                initial_h=low.state(h0, first, directions, f"l{layer}_h0"),
                initial_c=low.state(c0, first, directions, f"l{layer}_c0"),
                output_sequence=True,
                name=f"{c.name}_l{layer}",
                **kwargs,
            )
            finals_h.append(h)
            finals_c.append(cell)
        y = _batch_major(c, x, batch_first)
        h_n = _stack_states(c, low, finals_h, "hn")
        c_n = _stack_states(c, low, finals_c, "cn")
        return low.finish(y, 0, "y"), low.finish(h_n, 1, "hn"), low.finish(c_n, 2, "cn")

    def check(node, generation):
        return _check(node, generation, states=2)


def _stack_states(c, low: _Lowering, finals: list, tag: str):
    """Per-layer final states (batch, directions * hidden) -> torch's (L * D, batch, hidden)."""
    mb, name = c.mb, f"{c.name}_{tag}"
    layers, d = len(finals), low.directions
    if layers == 1:
        stacked = mb.expand_dims(x=finals[0], axes=[0], name=name + ("_stack" if d > 1 else ""))
    else:
        stacked = mb.stack(values=finals, axis=0, name=name + ("_stack" if d > 1 else ""))
    if d == 1:
        return stacked
    batch = c.node.outputs[1].type.shape[1]  # h_n: (L * D, batch, hidden)
    split = mb.reshape(x=stacked, shape=[layers, batch, d, low.hidden], name=name + "_split")
    split = mb.transpose(x=split, perm=[0, 2, 1, 3], name=name + "_transpose")
    return mb.reshape(x=split, shape=[layers * d, batch, low.hidden], name=name)


def _macs(node, states: int) -> int:
    """Multiply-accumulates of the input and hidden products over the whole sequence."""
    weights = node.inputs[: len(node.inputs) - 1 - states]
    x = node.inputs[len(weights)].type.shape
    steps_times_batch = x[0] * x[1]
    return sum(int(np.prod(w.type.shape)) for w in weights if w.type.rank == 2) * steps_times_batch


class GRU(Op):
    """torch's GRU (``aten::gru.input``): stacked, bidirectional, batch-first layers.

    Core ML's gru matches torch's only in iOS18's ``reset_after`` form (see the module
    docstring): earlier targets get it step by step in MIL ops.
    """

    name = "gru"
    inputs = ("*weights", "x", "h0")
    attrs = dict(_RECURRENT_ATTRS)
    num_outputs = 2
    lowers_from_data = True
    nondeterministic = _random
    accelerated = "matmul"

    def macs(node):
        return _macs(node, 1)

    def kernel(
        weights, x, h0, *, has_biases, num_layers, dropout, train, bidirectional, batch_first
    ):
        return tuple(
            torch.ops.aten.gru.input(
                x,
                h0,
                list(weights),
                has_biases,
                num_layers,
                dropout,
                train,
                bidirectional,
                batch_first,
            )
        )

    def lower(
        c, weights, x, h0, *, has_biases, num_layers, dropout, train, bidirectional, batch_first
    ):
        if c.generation < 18:
            # No Core ML op computes torch's GRU before iOS18: its steps, in MIL ops.
            low = _Lowering(c, states=1, gates=(0, 1, 2), fp16_from=0)
            x, h0 = low.operands
            return _per_direction_layers(c, low, x, h0, _gru_steps(c, low), batch_first)
        low = _Lowering(c, states=1, gates=_GRU_GATES)
        c.warnings.append(
            f"{c.node.name}: GRU lowered to iOS18's gru(reset_after=True), the form that "
            "matches torch; Apple's own torch-parity test of it is marked a known failure "
            "(coremltools, rdar://128479517): check this package on a device"
        )

        def run(w, x, h, d, tag):
            kwargs = {}
            if has_biases:
                kwargs["input_bias"] = low.cast(w["b_ih"])
                kwargs["bias"] = low.cast(w["b_hh"])
            y, h = c.mb.gru(
                x=x,
                initial_h=h,
                weight_ih=low.cast(w["weight_ih"]),
                weight_hh=low.cast(w["weight_hh"]),
                direction="reverse" if d else "forward",
                output_sequence=True,
                reset_after=True,
                name=f"{c.name}_{tag}",
                **kwargs,
            )
            return _in_time_order(c, y, d, tag), h

        x, h0 = low.operands
        return _per_direction_layers(c, low, x, h0, run, batch_first)

    def check(node, generation):
        return _check(node, generation, states=1)


class RNN(Op):
    """torch's Elman RNN (``aten::rnn_tanh.input``, ``aten::rnn_relu.input``)."""

    name = "rnn"
    inputs = ("*weights", "x", "h0")
    attrs = {**_RECURRENT_ATTRS, "nonlinearity": "tanh"}
    num_outputs = 2
    lowers_from_data = True
    nondeterministic = _random
    accelerated = "matmul"

    def macs(node):
        return _macs(node, 1)

    def kernel(
        weights,
        x,
        h0,
        *,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        nonlinearity,
    ):
        fn = {"tanh": torch.ops.aten.rnn_tanh.input, "relu": torch.ops.aten.rnn_relu.input}
        return tuple(
            fn[nonlinearity](
                x,
                h0,
                list(weights),
                has_biases,
                num_layers,
                dropout,
                train,
                bidirectional,
                batch_first,
            )
        )

    def lower(
        c,
        weights,
        x,
        h0,
        *,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
        nonlinearity,
    ):
        low = _Lowering(c, states=1, gates=_RNN_GATES)

        def run(w, x, h, d, tag):
            kwargs = {}
            if has_biases:
                kwargs["bias"] = low.cast(w["b_ih"] + w["b_hh"])
            y, h = c.mb.rnn(
                x=x,
                initial_h=h,
                weight_ih=low.cast(w["weight_ih"]),
                weight_hh=low.cast(w["weight_hh"]),
                direction="reverse" if d else "forward",
                output_sequence=True,
                activation=nonlinearity,
                name=f"{c.name}_{tag}",
                **kwargs,
            )
            return _in_time_order(c, y, d, tag), h

        x, h0 = low.operands
        return _per_direction_layers(c, low, x, h0, run, batch_first)

    def check(node, generation):
        if node.attrs["nonlinearity"] not in ("tanh", "relu"):
            return f"nonlinearity {node.attrs['nonlinearity']!r}"
        return _check(node, generation, states=1)
