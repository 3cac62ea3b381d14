"""The torch frontend: ``torch.export`` → IR graph.

It keeps the high-level ATen ops that export produces (conv2d, linear, layer_norm, ...)
instead of running the full core-ATen decomposition: that costs seconds on large models
and loses the structure Core ML wants. Only overloads with no op-table mapping are
decomposed, with torch's own decompositions; what still has no mapping becomes an
``aten`` fallback node that runs through torch.

Shapes and dtypes come from the export's fake tensors; parameters, buffers and lifted
constants become IR constants (numpy arrays that share memory with the model's tensors);
inputs keep the forward() argument names, outputs the returned dict keys (or
``output``, ``output_0``, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import operator
import warnings
from typing import Any

import numpy as np
import torch

from coreml_compile.compiler import dtypes, symbolic
from coreml_compile.compiler.frontends.aten_table import (
    ATEN_TO_IR,
    DEFAULT_SOURCES,
    Mapping,
)
from coreml_compile.compiler.ir import Graph, TensorType, Value
from coreml_compile.compiler.ops import get_record
from coreml_compile.compiler.ops.fallback import allowed_twin, encode_torch_object, refusal
from coreml_compile.errors import InputSpecError, TraceError, with_type

# How many rounds of "decompose what has no mapping" to try; each round can expose
# new overloads (a decomposition into other composite ops).
_DECOMPOSITION_ROUNDS = 3


def export(
    model: torch.nn.Module, example_inputs: tuple[Any, ...], dynamic_shapes: Any = None
) -> torch.export.ExportedProgram:
    """Run torch.export on the model in eval mode, turning failures into TraceError.

    ``dynamic_shapes`` is torch.export's own argument: the dimensions it names stay
    symbolic in the exported program (and in the IR)."""
    if not isinstance(example_inputs, tuple):
        example_inputs = tuple(example_inputs)
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise InputSpecError(
                f"example input {i} is a {type(t).__name__}; only tensors are supported"
            )
    model = model.eval()
    # Export logs diagnostics (and on failure, the partial graph); a failure is reported
    # as one TraceError, whose cause keeps the details for --debug.
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with (
            torch.no_grad(),
            contextlib.redirect_stderr(io.StringIO()),
            _fake_tensor_cache(dynamic_shapes is None),
        ):
            return torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch.export raises many unrelated types
        shapes = ", ".join(str(list(t.shape)) for t in example_inputs)
        raise TraceError(
            f"torch.export failed on inputs of shape {shapes}: {with_type(exc)} "
            "(check the example inputs; --input-shape sets them)"
        ) from exc
    finally:
        logging.disable(previous)


def _fake_tensor_cache(enabled: bool) -> contextlib.AbstractContextManager:
    """torch's fake-tensor dispatch cache on or off for an export: with symbolic shapes,
    building its entries costs more than they save (BERT's dynamic export 0.46 -> 0.34 s);
    static exports gain from it. A torch without the setting keeps its default."""
    config = torch._dynamo.config
    if not hasattr(config, "fake_tensor_cache_enabled"):
        return contextlib.nullcontext()
    return config.patch(fake_tensor_cache_enabled=enabled)


def schema_key(target: Any) -> str:
    return f"{target._schema.name}.{target._overloadname}"


def _functional_key(target: Any) -> tuple[str, bool]:
    """The mapping key of an overload, and whether it is the in-place form.

    In-place overloads (``relu_``) take their functional twin's entry, and the copying
    forms of views (``view_copy``, ``permute_copy``) their view's: a value is a value."""
    key = schema_key(target)
    namespace, rest = key.split("::", 1)
    packet, overload = rest.split(".", 1)
    if packet.endswith("_") and not packet.startswith("_"):
        return f"{namespace}::{packet[:-1]}.{overload}", True
    if packet.endswith("_copy") and not packet.startswith("_") and key not in ATEN_TO_IR:
        view = f"{namespace}::{packet.removesuffix('_copy')}.{overload}"
        if view in ATEN_TO_IR:
            return view, False
    return key, False


def _unmapped(ep: torch.export.ExportedProgram) -> set[Any]:
    """The overloads with no mapping that the program needs: a node nothing reads (an
    eval-mode layer drop's torch.rand) is dropped, not decomposed, unless it writes."""
    return {
        n.target
        for n in ep.graph.nodes
        if n.op == "call_function"
        and isinstance(n.target, torch._ops.OpOverload)
        and (n.users or _functional_key(n.target)[1] or n.target._schema.is_mutable)
        and _functional_key(n.target)[0] not in ATEN_TO_IR
        and _returns_tensors(n.target)
    }


def _returns_tensors(target: Any) -> bool:
    """False for shape arithmetic (sym_size) and asserts: the IR takes their values from
    the export's metadata, so decomposing them would only cost time."""
    return any("Tensor" in str(r.type) for r in target._schema.returns)


def _aliases(target: Any) -> bool:
    """Whether an overload's result shares storage with its input (a view, not a write),
    as its schema says (``Tensor(a)``); ``_unsafe_view`` shares it without saying so."""
    returns = target._schema.returns
    if schema_key(target) == "aten::_unsafe_view.default":
        return True
    return bool(returns) and any(
        r.alias_info is not None and not r.alias_info.is_write for r in returns
    )


def _buffer_writes(
    ep: torch.export.ExportedProgram,
) -> dict[torch.fx.Node, tuple[torch.fx.Node, torch.fx.Node | None]] | None:
    """The in-place writes the translator functionalises itself, or None if some write
    needs torch's functionalisation (``run_decompositions({})``).

    Maps each writing node to (the buffer it writes, the ``slice`` view it writes
    through, or None for a write into the whole buffer). That covers what KV caches do
    (``cache[:, :, a:b] = x``, ``cache.index_copy_(...)``, ``count += 1``) and spares the
    re-trace, which costs as much as the export. The translator keeps each buffer's
    current value and reads it in program order, which is right only if no view of a
    buffer taken before a write is read after it: otherwise torch's way is taken.
    """
    order = {node: i for i, node in enumerate(ep.graph.nodes)}
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    buffers = {
        placeholders[s.arg.name]
        for s in ep.graph_signature.input_specs
        if s.kind.name == "BUFFER" and s.arg.name in placeholders
    }
    writes: dict[torch.fx.Node, tuple[torch.fx.Node, torch.fx.Node | None]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if not _functional_key(node.target)[1] or not node.args:
            continue
        dest = node.args[0]
        if not isinstance(dest, torch.fx.Node):
            continue
        if dest in writes and writes[dest][1] is None:
            writes[node] = writes[dest]  # export passes a write's result on as the buffer
            continue
        if dest.op == "placeholder":
            if dest not in buffers:
                return None  # an input or a parameter written in place
            writes[node] = (dest, None)
            continue
        if dest.op == "call_function" and dest.target is operator.getitem:
            dest = dest.args[0]  # a piece of split/chunk/unbind: a view of their input
        if not _is_view(dest):
            continue  # an intermediate written in place: rebinding it is enough
        base = _view_base(dest)
        if base.op != "placeholder" and not _read_later(base, node, order):
            # A view of an intermediate, written where nothing reads that intermediate
            # or another view of it later (eval-mode dropout_ on a flatten): the write's
            # readers take the rebound view, as for an intermediate written in place.
            continue
        root = dest.args[0] if dest.args else None
        simple = (
            dest.target is torch.ops.aten.slice.Tensor
            and node.target is torch.ops.aten.copy_.default
            and root in buffers
            and len(dest.users) == 1
            and not node.users
        )
        if not simple:
            return None
        writes[node] = (root, dest)
    if not writes:
        return writes
    # Every view of a written buffer must be read before the next write into it.
    written: dict[torch.fx.Node, list[int]] = {}
    for node, (buffer, _view) in writes.items():
        written.setdefault(buffer, []).append(order[node])

    def last_read(node: torch.fx.Node) -> int:
        last = order[node]
        for user in node.users:
            last = max(last, last_read(user) if _is_view(user) else order[user])
        return last

    for buffer, positions in written.items():
        # A write's own result is the buffer too, as read at that point.
        views = [u for u in buffer.users if _is_view(u) or (u in writes and u.users)]
        for view in views:
            start, end = order[view], last_read(view)
            if any(start < w < end for w in positions):
                return None
    return writes


def _is_view(node: torch.fx.Node) -> bool:
    """A view of its first argument: an aliasing overload, or a split/chunk piece."""
    return node.op == "call_function" and (
        node.target is operator.getitem
        or (isinstance(node.target, torch._ops.OpOverload) and _aliases(node.target))
    )


def _view_base(view: torch.fx.Node) -> torch.fx.Node:
    """The tensor a chain of views (and split/chunk pieces) was taken from."""
    node = view
    while _is_view(node) and node.args and isinstance(node.args[0], torch.fx.Node):
        node = node.args[0]
    return node


def _read_later(base: torch.fx.Node, write: torch.fx.Node, order: dict) -> bool:
    """Whether ``base``, or any view of it, is read (or a view taken) after ``write``,
    other than through the view ``write`` itself wrote (its readers see the rebinding)."""
    written = write.args[0]
    family, stack = set(), [base]
    while stack:
        node = stack.pop()
        if node in family:
            continue
        family.add(node)
        for user in node.users:
            if user is write or node is written:
                continue
            if order[user] > order[write]:
                return True
            if _is_view(user):
                stack.append(user)
    return False


def decompose_unmapped(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Decompose only the overloads that have no mapping (and functionalise if needed)."""
    # torch's own deprecation notices about its internals are not the user's to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _decompose_unmapped(ep)


def _decompose_unmapped(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    if _buffer_writes(ep) is None:
        # Writes the translator cannot follow (into inputs or parameters, through views
        # that outlive a write) need torch's functionalisation; an empty table gives it.
        ep = ep.run_decompositions({})
    refused: set[Any] = set()
    for _ in range(_DECOMPOSITION_ROUNDS):
        unmapped = _unmapped(ep) - refused
        if not unmapped:
            break
        table = _default_decompositions()
        decomposable = {op: table[op] for op in unmapped if op in table}
        # Export keeps composite ops (view_as, ravel, broadcast_to, hsplit, atleast_2d,
        # .to(device)) whole; their composite kernel is their decomposition.
        decomposable |= {op: op.decompose for op in unmapped - table.keys() if _composite(op)}
        if not decomposable:
            break
        candidate = ep.run_decompositions(decomposable)
        if _has_effect_tokens(candidate):
            # Some decompositions add side-effecting checks (linalg_inv's error check)
            # threaded through tokens; keep those ops whole, decompose the others.
            refused |= {
                op
                for op in decomposable
                if _has_effect_tokens(ep.run_decompositions({op: table[op]}))
            }
            continue
        ep = candidate
    return ep


def _cast_argument(bound: dict[str, Any], record: Any) -> torch.dtype | None:
    """A ``dtype`` argument the record does not take: torch casts the input to it first
    (``x.sum(dtype=...)``, ``softmax(x, -1, dtype=torch.float32)``)."""
    dtype = bound.get("dtype")
    if not isinstance(dtype, torch.dtype) or "dtype" in record.attrs:
        return None
    return dtype


def _dtype_argument_is_a_cast(bound: dict[str, Any], record: Any) -> bool:
    """Whether casting first, then the record, gives what torch computes: for a float
    dtype and int64, not a narrower integer (the records compute as torch does without
    a dtype, which widens integer sums to int64)."""
    dtype = _cast_argument(bound, record)
    return dtype is None or dtype.is_floating_point or dtype == torch.int64


def _composite(op: Any) -> bool:
    return op.has_kernel_for_dispatch_key(torch._C.DispatchKey.CompositeImplicitAutograd)


@functools.cache
def _default_decompositions() -> dict[Any, Any]:
    """torch.export's default table, built once: building it takes about 0.3 s, so a
    model whose ops all have records never pays for it."""
    return torch.export.default_decompositions()


def _has_effect_tokens(ep: torch.export.ExportedProgram) -> bool:
    return any(spec.kind.name == "TOKEN" for spec in ep.graph_signature.input_specs)


def _output_names(ep: torch.export.ExportedProgram, count: int) -> list[str]:
    from torch.utils import _pytree as pytree

    indices = pytree.tree_unflatten(list(range(count)), ep.call_spec.out_spec)
    leaves, _ = pytree.tree_flatten_with_path(indices)
    names = []
    for path, _index in leaves:
        parts = []
        for key in path:
            parts.append(str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))))
        names.append("_".join(parts))
    if count == 1 and names == [""]:
        return ["output"]
    return [n if n and not n[0].isdigit() else f"output_{n}" for n in names]


def _tensor_type(val: Any) -> TensorType:
    return TensorType(_ir_dtype(val.dtype), tuple(symbolic.to_dim(d) for d in val.shape))


def _ir_dtype(dtype: torch.dtype) -> str:
    """The IR dtype a torch dtype is held in: its own, but float64 is held in float32,
    as Core ML has none and coremltools converts it so (float64_warnings says so)."""
    return "float32" if dtype == torch.float64 else dtypes.from_torch(dtype)


def float64_warnings(ep: torch.export.ExportedProgram) -> list[str]:
    """One warning if the program computes anything in float64, naming the first node."""
    from torch.utils import _pytree as pytree

    held = [
        n.name
        for n in ep.graph.nodes
        if any(
            isinstance(v, torch.Tensor) and v.dtype == torch.float64
            for v in pytree.tree_leaves(n.meta.get("val"))
        )
    ]
    if not held:
        return []
    return [
        f"{len(held)} float64 value(s), from {held[0]} on, are computed in float32: Core ML "
        "has no float64"
    ]


def _size(val: Any) -> Any:
    """A traced size (int or SymInt) as an attribute value: an int, or an Expr."""
    dim = symbolic.to_dim(val)
    return dim if isinstance(dim, int) else symbolic.Expr(dim)


def _state_name(target: str) -> str:
    """A buffer's state name: its path in the module, dots made underscores."""
    return target.replace(".", "_")


def _bound(value: Any) -> int | None:
    """A range end as an int; None for torch's (or sympy's) infinities."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _symbols(ep: torch.export.ExportedProgram) -> dict[str, symbolic.Symbol]:
    """Each dynamic dimension's range, from the export's range constraints."""
    symbols = {}
    for sym, bounds in ep.range_constraints.items():
        name = str(sym)
        low, high = _bound(bounds.lower), _bound(bounds.upper)
        symbols[name] = symbolic.Symbol(name, max(low or 0, 0), high)
    return symbols


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float64):
        t = t.float()  # float64 is held in float32 (_ir_dtype)
    # Shares memory with the model where it can: compiling must not double the weights.
    return t.cpu().numpy()


def _attr_value(v: Any) -> Any:
    """ATen argument → JSON-able attribute value (a size computed from dynamic
    dimensions becomes an Expr)."""
    if isinstance(v, torch.fx.Node):
        val = v.meta.get("val")
        if isinstance(val, torch.SymInt | int) and not isinstance(val, bool):
            return _size(val)
        raise TraceError(f"{v.name} is used as an attribute but is a tensor")
    if isinstance(v, torch.SymInt):
        return _size(v)
    if isinstance(v, torch.dtype):
        return _ir_dtype(v)
    if isinstance(v, tuple | list):
        return [_attr_value(x) for x in v]
    if isinstance(v, torch.device | torch.memory_format | torch.layout):
        return str(v)
    return v


def _scalar_like(node: torch.fx.Node, out: TensorType) -> TensorType:
    """The type a Python scalar operand takes: the result's, except for bool results
    (comparisons: ``x > 2`` compares in x's dtype), where it is the first tensor operand's."""
    if out.dtype != "bool":
        return out
    for arg in node.args:
        val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
        if isinstance(val, torch.Tensor):
            return _tensor_type(val)
    return out


def _reads_beyond(node: torch.fx.Node, kept: int) -> bool:
    """Whether the graph reads an output of ``node`` past the first ``kept`` (the
    indices of ``max_pool3d_with_indices``, which its record does not compute)."""
    return any(
        user.target is operator.getitem and user.args[1] >= kept and user.users
        for user in node.users
    )


def _bind(target: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """ATen call arguments by schema name, defaults filled in."""
    bound: dict[str, Any] = {}
    schema_args = target._schema.arguments
    positional = [a for a in schema_args if not a.kwarg_only]
    for a, v in zip(positional, args, strict=False):
        bound[a.name] = v
    bound.update(kwargs)
    for a in schema_args:
        if a.name not in bound and a.has_default_value():
            bound[a.name] = a.default_value
    return bound


class _Translator:
    def __init__(self, ep: torch.export.ExportedProgram, name: str):
        self.ep = ep
        self.graph = Graph(name)
        self._mutated = {
            s.target for s in ep.graph_signature.output_specs if s.kind.name == "BUFFER_MUTATION"
        }
        # Writes into buffers that export left in place (see _buffer_writes): each
        # written buffer becomes state, its last value the state's update.
        self._writes = _buffer_writes(ep) or {}
        targets = {s.arg.name: s.target for s in ep.graph_signature.input_specs}
        # Each written buffer and its target, in the order of their first writes.
        self._written = {b: targets[b.name] for b, _view in self._writes.values()}
        self._mutated |= set(self._written.values())
        self.env: dict[torch.fx.Node, Value | list[Value | None] | None] = {}

    def run(self) -> Graph:
        self.graph.symbols.update(_symbols(self.ep))
        self._placeholders()
        symbolic.declare(self.graph.symbols)
        for node in self.ep.graph.nodes:
            if node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                self._outputs(node)
        return self.graph

    # -- inputs and outputs -----------------------------------------------------------

    def _placeholders(self) -> None:
        sig = self.ep.graph_signature
        placeholders = {n.name: n for n in self.ep.graph.nodes if n.op == "placeholder"}
        for spec in sig.input_specs:
            node = placeholders[spec.arg.name]
            kind = spec.kind.name
            if kind == "USER_INPUT":
                val = node.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise InputSpecError(f"input {node.name} is not a tensor")
                self.env[node] = self.graph.add_input(node.name, _tensor_type(val))
                self._note_examples(val)
            elif kind == "BUFFER" and spec.target in self._mutated:
                # A buffer forward() writes to is state: read at the start of each call.
                name = _state_name(spec.target)
                self.env[node] = self.graph.add_input(name, _tensor_type(node.meta["val"]))
            elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                tensor = self.ep.state_dict.get(spec.target)
                if tensor is None:
                    tensor = self.ep.constants[spec.target]
                self.env[node] = self.graph.add_constant(spec.target, _to_numpy(tensor))
            else:
                raise TraceError(f"unsupported export input kind {kind} ({node.name})")

    def _note_examples(self, val: torch.Tensor) -> None:
        """Record the traced size of each dynamic dimension an input has."""
        for size in val.shape:
            dim = symbolic.to_dim(size)
            symbol = self.graph.symbols.get(dim) if isinstance(dim, str) else None
            hint = getattr(getattr(size, "node", None), "hint", None)
            if symbol is not None and symbol.example is None and hint is not None:
                self.graph.symbols[dim] = dataclasses.replace(symbol, example=int(hint))

    def _outputs(self, node: torch.fx.Node) -> None:
        specs = self.ep.graph_signature.output_specs
        results = node.args[0]
        user = [r for r, s in zip(results, specs, strict=True) if s.kind.name == "USER_OUTPUT"]
        writes = [
            (r, s.target)
            for r, s in zip(results, specs, strict=True)
            if s.kind.name == "BUFFER_MUTATION"
        ]
        writes += list(self._written.items())
        if len(user) + len(writes) != len(results) + len(self._written):
            kinds = sorted({s.kind.name for s in specs} - {"USER_OUTPUT", "BUFFER_MUTATION"})
            raise TraceError(f"the model's forward() has outputs of kind {', '.join(kinds)}")
        names = _output_names(self.ep, len(user))
        for fx_value, name in zip(user, names, strict=True):
            value = self._value(fx_value)
            if not isinstance(value, Value):
                raise TraceError(f"output {name} is not a tensor")
            self.graph.outputs.append(self._name_output(value, name))
        for fx_value, target in writes:
            state = _state_name(target)
            value = self._name_output(self._value(fx_value), f"{state}_next")
            self.graph.outputs.append(value)
            self.graph.states[state] = value.name

    def _name_output(self, value: Value, name: str) -> Value:
        """Give an output the user-facing name; an identity node where renaming can't."""
        g = self.graph
        if value.producer is not None and value not in g.outputs and value.name != name:
            old = value.name
            g.rename(value, name)
            if value.producer.name == old:
                value.producer.name = value.name
            return value
        if value.producer is not None and value not in g.outputs:
            return value
        return g.add_node("identity", [value], output_types=[value.type], name=name).output

    # -- calls ------------------------------------------------------------------------

    def _value(self, arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return self.env[arg]
        return arg

    def _call(self, node: torch.fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            source, index = node.args
            produced = self.env[source]
            outs = produced if isinstance(produced, list) else [produced]
            value = outs[index] if index < len(outs) else None
            if value is None and node.users:
                raise TraceError(f"{node.name} reads output {index} of {source.name}, not kept")
            self.env[node] = value
            return
        if isinstance(node.meta.get("val"), torch.SymInt | torch.SymBool | torch.SymFloat):
            # Shape arithmetic (sym_size, operator.mul, ...): its readers take the
            # expression it computes from the export's metadata, as an Expr attribute.
            self.env[node] = None
            return
        if not isinstance(target, torch._ops.OpOverload):
            raise TraceError(f"unsupported call {target} in the exported graph ({node.name})")
        if node.meta.get("val") is None and not node.users:
            # Export's run-time assertions (_assert_tensor_metadata, ...) compute nothing.
            return
        key, in_place = _functional_key(target)
        bound = _bind(target, node.args, node.kwargs)
        mapping = ATEN_TO_IR.get(key)
        record = get_record(mapping.op) if mapping is not None else None
        if (
            mapping is not None
            and (mapping.accept is None or mapping.accept(bound))
            and not _reads_beyond(node, record.num_outputs)
            and _dtype_argument_is_a_cast(bound, record)
        ):
            outputs = self._mapped(node, mapping, bound)
        else:
            outputs = self._fallback(node, key)
        self.env[node] = outputs[0] if len(outputs) == 1 else outputs
        write = self._writes.get(node)
        if write is not None and write[1] is not None:
            self.env[write[0]] = self._scatter(node, *write)
        elif in_place:
            # An in-place op returns its first argument updated: later readers of that
            # argument must see the result (other writes through views and into inputs
            # were functionalised by torch before).
            self.env[node.args[0]] = outputs[0]
            if write is not None:
                self.env[write[0]] = outputs[0]

    def _scatter(self, node: torch.fx.Node, buffer: torch.fx.Node, view: torch.fx.Node) -> Value:
        """The buffer after ``copy_`` wrote into its ``slice`` view: the copied value
        scattered back, as torch's functionalisation writes it."""
        bound = _bind(view.target, view.args, view.kwargs)
        record = get_record("slice_scatter")
        attrs = record.bind_attrs(
            {name: _attr_value(bound[name]) for name in record.attrs if name in bound}
        )
        current = self.env[buffer]
        copied = self.env[node]
        created = self.graph.add_node(
            "slice_scatter",
            [current, copied],
            attrs,
            output_types=[current.type],
            name=f"{node.name}_scatter",
        )
        return created.output

    def _mapped(self, node: torch.fx.Node, mapping: Mapping, bound: dict[str, Any]) -> list[Value]:
        record = get_record(mapping.op)
        meta = node.meta["val"]
        metas = list(meta) if isinstance(meta, tuple | list) else [meta]
        out_types = [_tensor_type(m) for m in metas[: record.num_outputs]]
        like = _scalar_like(node, out_types[0])
        inputs: list[Value | None] = []
        for spec in record.inputs:
            name = spec.strip("*?")
            arg = self._source(mapping, bound, name)
            if spec.startswith("*"):
                # A None in the list (index's skipped dims) stays an absent input.
                inputs.extend(None if a is None else self._as_value(a, like, node) for a in arg)
            else:
                inputs.append(None if arg is None else self._as_value(arg, like, node))
        inputs = self._cast_to_dtype_argument(node, record, bound, inputs)
        attrs = {}
        for name in record.attrs:
            if name in mapping.fixed:
                attrs[name] = mapping.fixed[name]
                continue
            source = mapping.rename.get(name, name)
            if source in bound:
                attrs[name] = _attr_value(bound[source])
        if "dtype" in record.attrs and attrs.get("dtype") is None:
            # torch's own answer for an unnamed dtype (the default float, x's, the
            # arguments' promotion) is the result's.
            attrs["dtype"] = out_types[0].dtype
        attrs = record.bind_attrs(attrs)
        created = self.graph.add_node(
            mapping.op, inputs, attrs, output_types=out_types, name=node.name
        )
        return created.outputs

    def _cast_to_dtype_argument(
        self, node: torch.fx.Node, record: Any, bound: dict[str, Any], inputs: list[Any]
    ) -> list[Any]:
        """The inputs with a cast of x before the record, where the call has a ``dtype``
        argument the record does not take (``_cast_argument``)."""
        dtype = _cast_argument(bound, record)
        x = inputs[0] if inputs else None
        if dtype is None or x is None:
            return inputs
        want = _ir_dtype(dtype)
        if x.type.dtype == want:
            return inputs
        cast = self.graph.add_node(
            "cast",
            [x],
            {"dtype": want},
            output_types=[TensorType(want, x.type.shape)],
            name=f"{node.name}_{want}",
        )
        return [cast.output, *inputs[1:]]

    def _source(self, mapping: Mapping, bound: dict[str, Any], name: str) -> Any:
        if name in mapping.rename:
            source = mapping.rename[name]
            if isinstance(source, tuple):  # one element of a list argument: ("hx", 0)
                items = bound.get(source[0])
                return items[source[1]] if items is not None else None
            return bound.get(source)
        for candidate in DEFAULT_SOURCES.get(name, (name,)):
            if candidate in bound:
                return bound[candidate]
        return None

    def _as_value(self, arg: Any, like: TensorType, node: torch.fx.Node) -> Value:
        """An IR value for an argument: the traced tensor, or a constant for a scalar."""
        if isinstance(arg, torch.fx.Node):
            value = self.env[arg]
            if not isinstance(value, Value):
                if isinstance(arg.meta.get("val"), torch.SymInt | torch.SymFloat):
                    raise TraceError(
                        f"{node.name} computes with a size of a dynamic dimension ({arg.name}) "
                        "as a tensor; that is not supported yet"
                    )
                raise TraceError(f"{node.name} reads {arg.name}, which is not a tensor")
            return value
        if isinstance(arg, bool | int | float):
            dtype = like.dtype
            if isinstance(arg, float) and not dtypes.is_float(dtype):
                dtype = "float32"
            return self.graph.add_constant(f"{node.name}_scalar", np.array(arg, dtype=dtype))
        raise TraceError(f"{node.name}: cannot use {arg!r} as a tensor")

    def _fallback(self, node: torch.fx.Node, key: str) -> list[Value | None]:
        """An ``aten`` node: the overload as traced, run by torch."""
        tensors: list[Value] = []

        def template(arg: Any) -> Any:
            if isinstance(arg, torch.fx.Node):
                value = self.env[arg]
                if not isinstance(value, Value):
                    raise TraceError(f"{node.name} reads {arg.name}, which is not a tensor")
                tensors.append(value)
                return {"input": len(tensors) - 1}
            if isinstance(arg, tuple | list):
                return [template(a) for a in arg]
            if isinstance(arg, torch.dtype | torch.device | torch.memory_format | torch.layout):
                # float64 is held in float32 (_ir_dtype): so are torch's results here.
                return encode_torch_object(torch.float32 if arg == torch.float64 else arg)
            if arg is None or isinstance(arg, bool | int | float | str):
                return arg
            raise TraceError(f"{node.name} ({key}): cannot record argument {arg!r}")

        args = template(list(node.args))
        kwargs = {k: template(v) for k, v in node.kwargs.items()}
        meta = node.meta.get("val")
        metas = list(meta) if isinstance(meta, tuple | list) else [meta]
        if not all(isinstance(m, torch.Tensor) for m in metas):
            raise TraceError(f"{node.name} ({key}) returns non-tensor values")
        # A package may only run functional aten ops (compiler/ops/fallback.py): an
        # in-place or view op runs as its functional or copying twin, which computes the
        # same values here (writes through views and inputs were functionalised before).
        traced = schema_key(node.target)
        target = allowed_twin(traced)
        if target is None:
            raise TraceError(
                f"{node.name} uses {traced}, which Core ML cannot run and a package may not "
                f"run on torch either: {refusal(traced)}"
            )
        created = self.graph.add_node(
            "aten",
            tensors,
            {"target": target, "args": args, "kwargs": kwargs},
            output_types=[_tensor_type(m) for m in metas],
            name=node.name,
        )
        return list(created.outputs)


def inline_autocast(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``ep`` with its ``torch.autocast`` regions inlined, computing as if autocast were off.

    torch.export records ``with torch.autocast(...)`` as the higher-order op
    ``wrap_with_autocast(device, dtype, enabled, cache, body, *args)``. A Core ML program
    computes in one precision, the package's (``precision="fp16"`` or ``"fp32"``): Core
    ML has no bfloat16, and no per-region precision to carry an autocast dtype. So the
    autocast dtype means nothing here: a region's ops, and every value computed from
    them, get the dtypes they have without autocast (inferred again on the export's fake
    tensors), and what an fp16 package computes in fp16 it computes there too. The
    run-time dtype checks torch.export wrote about an autocast dtype are dropped;
    ``enabled=False`` regions are inlined the same way. ``ep`` itself is not changed.
    """
    from torch._guards import detect_fake_mode
    from torch.utils import _pytree as pytree

    autocast = getattr(torch.ops.higher_order, "wrap_with_autocast", None)
    if autocast is None or not any(n.target is autocast for n in ep.graph.nodes):
        return ep
    graph = torch.fx.Graph()
    attributes: dict[str, Any] = {}
    inlined: set[torch.fx.Node] = set()

    def copy_nodes(module: Any, nodes: Any, env: dict, inside: bool) -> Any:
        for node in nodes:
            if node in env:  # a region's parameters, bound to what the call passed
                continue
            if node.op == "output" and inside:
                return tuple(torch.fx.map_arg(node.args[0], env.__getitem__))
            if node.target is autocast:
                body = getattr(module, node.args[4].target)
                params = [p for p in body.graph.nodes if p.op == "placeholder"]
                passed = torch.fx.map_arg(tuple(node.args[5:]), env.__getitem__)
                bound = dict(zip(params, passed, strict=True))
                env[node] = copy_nodes(body, body.graph.nodes, bound, True)
            elif node.target is operator.getitem and isinstance(env.get(node.args[0]), tuple):
                env[node] = env[node.args[0]][node.args[1]]  # a region's result
            elif node.op == "get_attr" and all(u.target is autocast for u in node.users):
                continue  # a region's body, inlined where it is called
            else:
                new = graph.node_copy(node, env.__getitem__)
                env[node] = new
                if inside:
                    inlined.add(new)
                if node.op == "get_attr":  # another higher-order op's body: keep it
                    target = new.target if new.target not in attributes else new.name
                    attributes[target] = operator.attrgetter(node.target)(module)
                    new.target = target
        return None

    root_env: dict[torch.fx.Node, Any] = {}
    copy_nodes(ep.graph_module, ep.graph.nodes, root_env, False)

    # Types again, without autocast, for the inlined nodes and whatever reads a changed one.
    fake_mode = detect_fake_mode([n.meta.get("val") for n in graph.nodes])
    fake_mode = contextlib.nullcontext() if fake_mode is None else fake_mode
    changed: set[torch.fx.Node] = set()
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        reads_changed = any(a in changed for a in node.all_input_nodes)
        if node not in inlined and not reads_changed:
            continue
        old = node.meta.get("val")
        if old is None:
            if reads_changed and node.target is torch.ops.aten._assert_tensor_metadata.default:
                graph.erase_node(node)  # it checks for the autocast dtype
            continue
        args, kwargs = torch.fx.map_arg(
            (node.args, node.kwargs),
            lambda n: attributes[n.target] if n.op == "get_attr" else n.meta["val"],
        )
        try:
            with fake_mode:
                val = node.target(*args, **kwargs)
        except Exception as exc:  # whatever the op raises on its new input dtypes
            raise TraceError(
                f"{node.name} in a torch.autocast region does not run without autocast: "
                f"{with_type(exc)}"
            ) from exc
        node.meta["val"] = val
        before, after = pytree.tree_leaves(old), pytree.tree_leaves(val)
        if any(
            isinstance(a, torch.Tensor) and (a.dtype != b.dtype or a.shape != b.shape)
            for a, b in zip(before, after, strict=False)
        ):
            changed.add(node)

    # Outputs keep their places; those that were a region's results have new names.
    names = {old.name: new.name for old, new in root_env.items() if isinstance(new, torch.fx.Node)}
    signature = ep.graph_signature
    tensor = torch.export.graph_signature.TensorArgument
    outputs = [
        dataclasses.replace(s, arg=tensor(name=names[s.arg.name]))
        if isinstance(s.arg, tensor) and s.arg.name in names
        else s
        for s in signature.output_specs
    ]
    module = torch.fx.GraphModule(attributes, graph)
    module.meta.update(ep.graph_module.meta)
    return torch.export.ExportedProgram(
        root=module,
        graph=module.graph,
        graph_signature=dataclasses.replace(signature, output_specs=outputs),
        state_dict=ep.state_dict,
        range_constraints=ep.range_constraints,
        module_call_graph=ep.module_call_graph,
        example_inputs=ep.example_inputs,
        constants=ep.constants,
        verifiers=ep.verifiers,
    )


def nonzero_state_warnings(ep: torch.export.ExportedProgram, graph: Graph) -> list[str]:
    """A warning for each buffer that became state (``graph.states``) and does not hold
    zeros now: as a Core ML state it starts at zeros in every new state."""
    warnings = []
    for target, tensor in ep.state_dict.items():
        if _state_name(target) in graph.states and bool(tensor.detach().ne(0).any()):
            warnings.append(
                f"buffer {target} holds non-zero values, but as Core ML state it starts at "
                "zeros in each make_state(); write its initial values in forward() if they "
                "matter"
            )
    return warnings


def to_ir(ep: torch.export.ExportedProgram, name: str = "main") -> Graph:
    """Translate an ExportedProgram into an IR graph (decomposing unmapped ops first)."""
    ep = decompose_unmapped(inline_autocast(ep))
    return _Translator(ep, name).run()


def trace(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    name: str = "main",
    dynamic_shapes: Any = None,
) -> Graph:
    """Export ``model`` on ``example_inputs`` and translate it into an IR graph."""
    return to_ir(export(model, example_inputs, dynamic_shapes), name)
