"""TensorFlow.js graph models as plain TensorFlow graphs.

A TFJS graph model is a GraphDef in JSON (``modelTopology``) and binary weight shards
(``weightsManifest``; some weights float16-quantised). :func:`convert` turns it into
a frozen TensorFlow ``GraphDef``: each weight becomes the value of its ``Const`` node,
and the TFJS-only fused ops (``_FusedConv2D``, ``FusedDepthwiseConv2dNative``,
``_FusedMatMul`` with ``fused_ops`` such as BiasAdd, Relu, Relu6, Prelu, LeakyRelu,
Elu, Sigmoid, Tanh) are split back into the plain op, a ``BiasAdd`` and the activation.
The conversion runs once, at set-up; the pipeline loads the cached ``.pb``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_NP_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def read_weights(model_json: Path) -> dict[str, np.ndarray]:
    """Every weight of a TFJS model, by name, dequantised to its declared dtype."""
    spec = json.loads(Path(model_json).read_text())
    out: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            dtype = _NP_DTYPES[w["dtype"]]
            quant = w.get("quantization")
            if quant:
                qdtype = _QUANT_DTYPES[quant["dtype"]]
                nbytes = count * np.dtype(qdtype).itemsize
                raw = np.frombuffer(buf, dtype=qdtype, count=count, offset=offset)
                if quant["dtype"] == "float16":
                    arr: np.ndarray = raw.astype(dtype)
                else:  # affine integer quantisation
                    arr = (raw.astype(np.float32) * float(quant["scale"]) + float(quant["min"])).astype(dtype)
            else:
                nbytes = count * np.dtype(dtype).itemsize
                arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).copy()
            offset += nbytes
            out[w["name"]] = arr.reshape(shape)
        if offset != len(buf):
            raise ValueError(f"{model_json.name}: weight shards hold {len(buf)} bytes, the manifest {offset}")
    return out


def _attr_list_s(node: Any, key: str) -> list[str]:
    return [s.decode() for s in node.attr[key].list.s] if key in node.attr else []


def _activation(gd: Any, name: str, kind: str, x: str, node: Any, extra: list[str]) -> None:
    """Append the nodes of one activation named ``name`` applied to ``x``."""
    from tensorflow.core.framework import node_def_pb2

    def add(op: str, nname: str, inputs: list[str], **attrs: Any) -> None:
        n = node_def_pb2.NodeDef(name=nname, op=op, input=inputs)
        n.attr["T"].CopyFrom(node.attr["T"])
        for k, v in attrs.items():
            n.attr[k].CopyFrom(v)
        gd.node.append(n)

    simple = {"Relu": "Relu", "Relu6": "Relu6", "Elu": "Elu", "Sigmoid": "Sigmoid", "Tanh": "Tanh"}
    if kind in simple:
        add(simple[kind], name, [x])
    elif kind == "LeakyRelu":
        from tensorflow.core.framework import attr_value_pb2

        alpha = node.attr["leakyrelu_alpha"].f if "leakyrelu_alpha" in node.attr else 0.2
        add("LeakyRelu", name, [x], alpha=attr_value_pb2.AttrValue(f=alpha))
    elif kind == "Prelu":
        # prelu(x) = max(x, 0) + alpha * min(x, 0)
        alpha = extra[0]
        add("Relu", name + "/pos", [x])
        add("Neg", name + "/negx", [x])
        add("Relu", name + "/negrelu", [name + "/negx"])
        add("Neg", name + "/neg", [name + "/negrelu"])
        add("Mul", name + "/scaled", [alpha, name + "/neg"])
        add("AddV2", name, [name + "/pos", name + "/scaled"])
    else:
        raise ValueError(f"unsupported fused activation {kind!r} in {node.name}")


def _split_fused(gd_in: Any) -> Any:
    """A copy of ``gd_in`` with every TFJS fused op split into plain TensorFlow ops."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    base_op = {
        "_FusedConv2D": "Conv2D",
        "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
        "_FusedMatMul": "MatMul",
    }
    keep_attrs = {
        "Conv2D": ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings", "use_cudnn_on_gpu"),
        "DepthwiseConv2dNative": ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings"),
        "MatMul": ("T", "transpose_a", "transpose_b"),
    }
    gd = graph_pb2.GraphDef()
    gd.versions.CopyFrom(gd_in.versions)
    for node in gd_in.node:
        if node.op not in base_op:
            gd.node.append(node)
            continue
        fused = _attr_list_s(node, "fused_ops")
        num_args = int(node.attr["num_args"].i) if "num_args" in node.attr else 0
        data_inputs = [i for i in node.input if not i.startswith("^")]
        controls = [i for i in node.input if i.startswith("^")]
        x, w, args = data_inputs[0], data_inputs[1], data_inputs[2:]
        op = base_op[node.op]
        if op == "DepthwiseConv2dNative" and (node.attr["padding"].s == b"EXPLICIT"):
            raise ValueError(f"explicit padding in {node.name} is not supported")
        core = node_def_pb2.NodeDef(name=node.name + "/core", op=op, input=[x, w, *controls])
        for k in keep_attrs[op]:
            if k in node.attr:
                core.attr[k].CopyFrom(node.attr[k])
        if not fused:
            core.name = node.name
            gd.node.append(core)
            continue
        gd.node.append(core)
        cur = core.name
        ops = list(fused)
        if ops and ops[0] == "BiasAdd":
            if num_args < 1:
                raise ValueError(f"{node.name}: BiasAdd without a bias input")
            bias = node_def_pb2.NodeDef(name=node.name + "/bias" if len(ops) > 1 else node.name, op="BiasAdd")
            bias.input.extend([cur, args[0]])
            bias.attr["T"].CopyFrom(node.attr["T"])
            if "data_format" in node.attr and op != "MatMul":
                bias.attr["data_format"].CopyFrom(node.attr["data_format"])
            gd.node.append(bias)
            cur = bias.name
            ops = ops[1:]
            args = args[1:]
        elif ops and ops[0] == "FusedBatchNorm":
            raise ValueError(f"{node.name}: fused batch norm is not supported")
        if len(ops) > 1:
            raise ValueError(f"{node.name}: unsupported fused_ops {fused}")
        if ops:
            _activation(gd, node.name, ops[0], cur, node, args)
    return gd


def convert(model_json: Path) -> bytes:
    """The TFJS graph model at ``model_json`` as a serialised, frozen TensorFlow GraphDef."""
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2

    spec = json.loads(Path(model_json).read_text())
    topo = dict(spec["modelTopology"])
    topo.pop("library", None)
    gd = json_format.ParseDict(topo, graph_pb2.GraphDef(), ignore_unknown_fields=True)
    weights = read_weights(Path(model_json))
    for node in gd.node:
        if node.name in weights:
            if node.op != "Const":
                raise ValueError(f"weight {node.name} is not a Const node")
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
            node.attr["dtype"].type = node.attr["value"].tensor.dtype
    empty = [
        n.name
        for n in gd.node
        if n.op == "Const"
        and not n.attr["value"].tensor.tensor_content
        and not n.attr["value"].tensor.float_val
        and not n.attr["value"].tensor.int_val
        and n.attr["value"].tensor.tensor_shape.dim
    ]
    if empty:
        raise ValueError(f"{model_json.name}: constants without a value: {', '.join(empty[:5])}")
    return _split_fused(gd).SerializeToString()


class FrozenGraph:
    """A frozen GraphDef as a callable TensorFlow function from one input to one output."""

    def __init__(self, graph_pb: bytes, input_name: str, output_name: str) -> None:
        import tensorflow as tf

        gd = tf.compat.v1.GraphDef()
        gd.ParseFromString(graph_pb)

        def _import() -> None:
            tf.compat.v1.import_graph_def(gd, name="")

        wrapped = tf.compat.v1.wrap_function(_import, [])
        g = wrapped.graph
        self._fn = wrapped.prune(g.get_tensor_by_name(_tensor(input_name)), g.get_tensor_by_name(_tensor(output_name)))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return np.asarray(self._fn(tf.constant(np.asarray(batch, dtype=np.float32))))


def _tensor(name: str) -> str:
    return name if ":" in name else name + ":0"
