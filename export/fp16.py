"""float16 ONNX graphs from the checked float32 ones, and the per-graph precision setting.

    from export.fp16 import GraphPrecisions, convert_fp16
    half, report = convert_fp16(onnx.load("unet_t64.onnx"))
    GraphPrecisions.parse("unet=fp16,encoder=fp16,decoder=fp32")

:func:`convert_fp16` rewrites a float32 graph so that its weights and arithmetic are
float16 while its inputs and outputs stay float32 (callers feed and read the same
tensors as for the float32 graph). Every node is put in one of two precisions:

* **float32, always** -- what float16's 10-bit mantissa and 65504 range break:
  normalisation (``InstanceNormalization``, which is how the TorchScript exporter
  writes ``GroupNorm`` at opset 17, ``LayerNormalization``, ``GroupNormalization``,
  ``BatchNormalization``, every ``Reduce*`` op, ``Pow``: sums of squares overflow
  and lose the mean), ``Softmax`` / ``LogSoftmax`` (exp of the logits), the
  sinusoidal timestep embedding (``Sin``/``Cos`` and every float node feeding them:
  ``t * freqs`` reaches hundreds, where float16 steps by 0.25 rad and more), and the
  codebook lookup (every float node feeding an ``ArgMin``/``ArgMax``: the distances
  ``|z|^2 + |e|^2 - 2 z.e`` cancel, so float16 picks other codes; and the ``Gather`` of
  codebook rows by those indices, so decoded codes are the float32 table's).
* **float16** -- matrix products and convolutions (``Conv``, ``ConvTranspose``,
  ``MatMul``, ``Gemm``, ``Einsum``) unless forced to float32 above.
* everything else (element-wise arithmetic, activations, data movement) **follows its
  inputs**: float16 when any of its non-constant float inputs is float16, float32
  otherwise. A normalisation's affine and activation thus stay in float32 up to the
  next convolution (no extra casts), and shape arithmetic done in float stays float32.

Float initializers (and float ``Constant`` nodes, which are made initializers first)
read by a float16 node get a float16 copy (values beyond +-65504 are clipped to it);
ones also read by float32 nodes keep their float32 original. A ``Cast`` is inserted at
every precision boundary (one per tensor and target type), graph outputs produced in
float16 get a final Cast to float32, inputs whose type an operator fixes (``Resize``
scales, ``Dropout`` ratio, ...) are left alone, and identity casts the tracer wrote
(``x.float()`` on a float32 tensor) follow their input. The result passes
``onnx.checker.check_model(full_check=True)`` (strict shape and type inference).

onnxruntime's CPU provider runs such graphs by computing ops that lack a float16 CPU
kernel in float32 between casts (its ``InsertCastTransformer``): the rounding of
weights and of every tensor between nodes is real there, accumulation inside a kernel
may not be. On CUDA (onnxruntime or TensorRT) the float16 kernels run.

:class:`GraphPrecisions` says which graphs of a model use float16. Exports take it
(``export.families.export_onnx(..., precisions=...)``, ``resshift export onnx --precision``)
and ``export.store.OnnxStore`` hands out graphs of a requested precision.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Iterable, Optional

import numpy as np

from .errors import ExportError

FP32, FP16 = "fp32", "fp16"
PRECISION_NAMES = (FP32, FP16)

# TensorProto element types
_FLOAT, _FLOAT16 = 1, 10
_F16_MAX = float(np.finfo(np.float16).max)

NORM_OPS = frozenset({"InstanceNormalization", "LayerNormalization", "GroupNormalization",
                      "BatchNormalization", "LpNormalization", "MeanVarianceNormalization"})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                        "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "ReduceMax",
                        "ReduceMin", "CumSum"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
# the ops whose float inputs (and everything float that feeds them) stay float32
TRIG_OPS = frozenset({"Sin", "Cos"})
INDEX_OPS = frozenset({"ArgMin", "ArgMax"})
KEEP_FP32_OPS = NORM_OPS | REDUCE_OPS | SOFTMAX_OPS | TRIG_OPS | INDEX_OPS | frozenset(
    {"Pow", "Range", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"})
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})

# Inputs that carry the node's float precision; float inputs not named here have a type
# the operator fixes independently (Resize scales are float32 only, Dropout's ratio...).
_DATA_INPUTS = {"Resize": (0,), "Upsample": (0,), "Dropout": (0,), "Gather": (0,),
                "GatherElements": (0,), "GatherND": (0,), "Reshape": (0,), "Expand": (0,),
                "Tile": (0,), "Slice": (0,), "Split": (0,), "Squeeze": (0,),
                "Unsqueeze": (0,), "Pad": (0, 2), "ScatterND": (0, 2),
                "ScatterElements": (0, 2), "TopK": (0,), "Trilu": (0,),
                "LayerNormalization": (0, 1, 2), "InstanceNormalization": (0, 1, 2)}


# ---------------------------------------------------------------------------
# the precision setting
# ---------------------------------------------------------------------------

# graph kinds (export.graphs.GraphSpec.kind) -> GraphPrecisions field
KIND_FIELDS = {"unet": "unet", "vae_encoder": "encoder", "vae_decoder": "decoder"}


@dataclass(frozen=True)
class GraphPrecisions:
    """Precision (``fp32`` or ``fp16``) of each graph of a ResShift model.

    ``GraphPrecisions.parse("fp16")`` sets all three; ``"unet=fp16,decoder=fp16"``
    names graphs (unnamed ones stay fp32). ``str()`` gives the canonical string back.
    """

    unet: str = FP32
    encoder: str = FP32
    decoder: str = FP32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in PRECISION_NAMES:
                raise ValueError(f"graph precision {f.name}={value!r} is not one of "
                                 f"{', '.join(PRECISION_NAMES)}")

    @classmethod
    def parse(cls, text: "str | GraphPrecisions") -> "GraphPrecisions":
        """``fp32`` | ``fp16`` | comma-separated ``graph=precision`` pairs
        (graphs: unet, encoder, decoder). ValueError says what is wrong."""
        if isinstance(text, GraphPrecisions):
            return text
        spec = str(text).strip().lower()
        if spec in PRECISION_NAMES:
            return cls(spec, spec, spec)
        names = [f.name for f in fields(cls)]
        hint = (f"use fp32, fp16 or graph=precision pairs such as "
                f"'unet=fp16,encoder=fp16,decoder=fp32' (graphs: {', '.join(names)})")
        if not spec:
            raise ValueError(f"empty graph precision; {hint}")
        if "=" not in spec and "," not in spec:
            raise ValueError(f"unknown precision {str(text).strip()!r}; {hint}")
        values: dict[str, str] = {}
        for part in spec.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not key or not value:
                raise ValueError(f"graph precision {part.strip()!r} in {text!r} is not "
                                 f"graph=precision; {hint}")
            if key not in names:
                raise ValueError(f"unknown graph {key!r} in {text!r}; {hint}")
            if key in values:
                raise ValueError(f"graph {key!r} is given twice in {text!r}")
            if value not in PRECISION_NAMES:
                raise ValueError(f"unknown precision {value!r} for {key} in {text!r}; "
                                 f"use {' or '.join(PRECISION_NAMES)}")
            values[key] = value
        return cls(**values)

    def of(self, kind: str) -> str:
        """Precision of a graph kind (``unet``, ``vae_encoder``, ``vae_decoder``; the
        short names ``encoder`` / ``decoder`` too). Other kinds are fp32."""
        name = KIND_FIELDS.get(kind, kind)
        return getattr(self, name) if name in KIND_FIELDS.values() else FP32

    @property
    def any_fp16(self) -> bool:
        return FP16 in (self.unet, self.encoder, self.decoder)

    def __str__(self) -> str:
        if self.unet == self.encoder == self.decoder:
            return self.unet
        return f"unet={self.unet},encoder={self.encoder},decoder={self.decoder}"


# Which graphs a reduced-precision runtime (TensorRT, onnxruntime CUDA) should take in
# float16: all three keep 47 dB end to end on the full-size architecture, above the
# 40 dB bar the bf16 paths are held to (docs/benchmarks.md, "fp16 graphs").
FP16_RECOMMENDED = GraphPrecisions(unet=FP16, encoder=FP16, decoder=FP16)


def graph_file(name: str, precision: str = FP32) -> str:
    """File name of a graph: ``unet_t64.onnx`` (float32), ``unet_t64.fp16.onnx``."""
    if precision not in PRECISION_NAMES:
        raise ExportError(f"unknown graph precision {precision!r}; use "
                          f"{' or '.join(PRECISION_NAMES)}")
    return f"{name}.onnx" if precision == FP32 else f"{name}.{precision}.onnx"


# ---------------------------------------------------------------------------
# the converter
# ---------------------------------------------------------------------------


@dataclass
class Fp16Report:
    """What :func:`convert_fp16` did: node counts per precision, float32 ops kept by
    type, casts inserted, initializers converted / clipped."""

    fp16_nodes: int
    fp32_nodes: int
    kept_fp32: dict[str, int]
    casts: int
    initializers_fp16: int
    clipped_values: int

    def as_dict(self) -> dict:
        return {"fp16_nodes": self.fp16_nodes, "fp32_nodes": self.fp32_nodes,
                "kept_fp32": dict(sorted(self.kept_fp32.items())), "casts": self.casts,
                "initializers_fp16": self.initializers_fp16,
                "clipped_values": self.clipped_values}


def _elem_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    return types


def _constants_to_initializers(graph) -> None:
    """Float ``Constant`` nodes (a ``value`` tensor) become initializers, so one rule
    converts every float constant."""
    from onnx import numpy_helper

    keep = []
    for node in graph.node:
        attr = {a.name: a for a in node.attribute}
        if (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and "value" in attr
                and attr["value"].t.data_type == _FLOAT):
            tensor = numpy_helper.from_array(numpy_helper.to_array(attr["value"].t),
                                             node.output[0])
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _data_inputs(node) -> Iterable[int]:
    fixed = _DATA_INPUTS.get(node.op_type)
    return range(len(node.input)) if fixed is None else fixed


def convert_fp16(model, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS,
                 check: bool = True):
    """A float16 copy of ``model`` (an ``onnx.ModelProto`` of float32 tensors) and an
    :class:`Fp16Report`. See the module docstring for the rules. ``check``: run
    ``onnx.checker`` with full_check (strict shape and type inference) on the result."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise ExportError(f"float16 conversion does not handle subgraphs ({node.op_type} "
                              f"{node.name})")
    _constants_to_initializers(graph)
    types = _elem_types(model)
    if any(t == _FLOAT16 for t in types.values()):
        raise ExportError("the graph already has float16 tensors; convert a float32 graph")
    keep_ops = frozenset(keep_fp32_ops)
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == _FLOAT

    # float32 by closure: every float tensor feeding Sin/Cos or ArgMin/ArgMax, through
    # whatever computes it (the timestep embedding's t * freqs, the codebook distances)
    forced: set[int] = set()
    stack = [n for n in graph.node if n.op_type in (TRIG_OPS | INDEX_OPS) & keep_ops]
    while stack:
        node = stack.pop()
        if id(node) in forced:
            continue
        forced.add(id(node))
        for name in node.input:
            if is_float(name) and name in producer:
                stack.append(producer[name])
    # the Gather of codebook rows by indices an ArgMin/ArgMax chose
    index_tensors = {o for n in graph.node if n.op_type in INDEX_OPS & keep_ops
                     for o in n.output}
    for node in graph.node:           # topological: index tensors propagate forward
        if node.op_type in INDEX_OPS:
            continue
        if any(i in index_tensors for i in node.input) and not any(
                is_float(o) for o in node.output):
            index_tensors.update(node.output)
        elif node.op_type in ("Gather", "GatherElements", "GatherND") and (
                len(node.input) > 1 and node.input[1] in index_tensors):
            forced.add(id(node))

    # decide each node's precision in graph (topological) order
    prec: dict[str, str] = {}         # float tensor -> precision in the new graph
    for v in graph.input:
        if is_float(v.name):
            prec[v.name] = FP32
    decided: list[tuple[object, Optional[str]]] = []
    kept: dict[str, int] = defaultdict(int)
    for node in graph.node:
        floats_in = [node.input[i] for i in _data_inputs(node)
                     if i < len(node.input) and is_float(node.input[i])]
        floats_out = [o for o in node.output if is_float(o)]
        if node.op_type == "Cast":
            to = next(a.i for a in node.attribute if a.name == "to")
            identity = to == _FLOAT and is_float(node.input[0])
            p = prec.get(node.input[0], FP32) if identity else None
        elif not floats_in and not floats_out:
            p = None                  # integer / bool work: untouched
        elif id(node) in forced or node.op_type in keep_ops:
            p = FP32
            kept[node.op_type] += 1
        elif node.op_type in COMPUTE_OPS:
            p = FP16
        else:
            active = [prec.get(n, FP32) for n in floats_in if n not in inits]
            p = FP16 if FP16 in active else FP32
        for o in floats_out:
            prec[o] = p or FP32
        decided.append((node, p))

    # rewrite: casts at boundaries, float16 initializers, outputs back to float32
    new_nodes = []
    cast_cache: dict[tuple[str, str], str] = {}
    half_inits: dict[str, str] = {}
    used_fp32_inits: set[str] = set()
    clipped = 0
    new_value_info: dict[str, int] = {}

    def half_initializer(name: str) -> str:
        nonlocal clipped
        if name not in half_inits:
            arr = numpy_helper.to_array(inits[name])
            finite = np.isfinite(arr)
            over = finite & (np.abs(arr) > _F16_MAX)
            clipped += int(over.sum())
            arr = np.where(over, np.sign(arr) * _F16_MAX, arr).astype(np.float16)
            half = f"{name}__fp16"
            graph.initializer.append(numpy_helper.from_array(arr, half))
            half_inits[name] = half
        return half_inits[name]

    def cast(name: str, to: str) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = f"{name}__to_{to}"
            new_nodes.append(helper.make_node(
                "Cast", [name], [out], name=f"{name}__cast_{to}",
                to=_FLOAT16 if to == FP16 else _FLOAT))
            new_value_info[out] = _FLOAT16 if to == FP16 else _FLOAT
            cast_cache[key] = out
        return cast_cache[key]

    fp16_nodes = fp32_nodes = 0
    for node, p in decided:
        if p is None:
            for name in node.input:
                if name in inits:
                    used_fp32_inits.add(name)
            new_nodes.append(node)
            continue
        if node.op_type == "Cast":        # identity cast: follows its input
            if p == FP16:
                for a in node.attribute:
                    if a.name == "to":
                        a.i = _FLOAT16
            new_nodes.append(node)
            continue
        fp16_nodes += p == FP16
        fp32_nodes += p == FP32
        data = set(i for i in _data_inputs(node) if i < len(node.input))
        for i, name in enumerate(node.input):
            if not is_float(name):
                if name in inits:
                    used_fp32_inits.add(name)
                continue
            want = p if i in data else FP32
            if name in inits:
                if want == FP16:
                    node.input[i] = half_initializer(name)
                else:
                    used_fp32_inits.add(name)
            elif prec.get(name, FP32) != want:
                node.input[i] = cast(name, want)
        if p == FP16 and node.op_type == "ConstantOfShape":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == _FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(
                        numpy_helper.to_array(a.t).astype(np.float16)))
        new_nodes.append(node)
    # graph outputs keep float32: rename a float16 producer's output, cast it back
    renamed: dict[str, str] = {}
    for out in graph.output:
        if is_float(out.name) and prec.get(out.name) == FP16:
            inner = f"{out.name}__fp16"
            renamed[out.name] = inner
    if renamed:
        for node in new_nodes:
            for lst in (node.input, node.output):
                for i, name in enumerate(lst):
                    if name in renamed:
                        lst[i] = renamed[name]
        for orig, inner in renamed.items():
            new_nodes.append(helper.make_node("Cast", [inner], [orig], name=f"{orig}__out",
                                              to=_FLOAT))
            prec[inner] = FP16
    del graph.node[:]
    graph.node.extend(new_nodes)
    # drop float32 initializers nothing reads any more
    live = [t for t in graph.initializer
            if t.name not in half_inits or t.name in used_fp32_inits]
    del graph.initializer[:]
    graph.initializer.extend(live)
    # declared types: rewrite every intermediate value_info from the decisions; let
    # shape inference fill in the rest
    for v in graph.value_info:
        name = renamed.get(v.name, v.name)
        if name != v.name:
            v.name = name
        if is_float(v.name) or v.name in renamed.values():
            v.type.tensor_type.elem_type = (_FLOAT16 if prec.get(v.name) == FP16
                                            else _FLOAT)
    known = {v.name for v in graph.value_info}
    for name, elem in new_value_info.items():
        if name not in known:
            graph.value_info.append(helper.make_empty_tensor_value_info(name))
            graph.value_info[-1].type.tensor_type.elem_type = elem
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    if check:
        onnx.checker.check_model(model, full_check=True)
    report = Fp16Report(fp16_nodes, fp32_nodes, dict(kept), len(cast_cache) + len(renamed),
                        len(half_inits), clipped)
    return model, report


def node_precisions(model) -> dict[str, list[str]]:
    """op type -> the float element types ("fp16"/"fp32") its nodes compute in, one
    entry per node: the type of its first float input (or output). For inspecting
    what a converted graph really does."""
    types = _elem_types(model)
    names = {_FLOAT: FP32, _FLOAT16: FP16}
    out: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            if name and types.get(name) in names:
                out[node.op_type].append(names[types[name]])
                break
    return dict(out)
