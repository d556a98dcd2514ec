"""Real ONNX models whose answers are known, built with the ``onnx`` helper API (nothing
downloaded). Each builder returns the serialized model as bytes; :func:`save` writes it.

Shapes use a symbolic batch dimension ``"n"`` unless ``batch`` is given; ``static=False`` makes
the spatial dimensions symbolic too (so only a probe run tells the output size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ELEM = {"float": TensorProto.FLOAT, "double": TensorProto.DOUBLE, "uint8": TensorProto.UINT8}


def save(model: bytes, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return str(path)


def _shape(layout: str, size: int | str, batch: int | str, channels: int = 3) -> list:
    if layout == "NCHW":
        return [batch, channels, size, size]
    if layout == "NHWC":
        return [batch, size, size, channels]
    return [batch, "a", "b", "c"]  # nothing to read a layout from


def _finish(
    nodes: list,
    inputs: list,
    outputs: list,
    initializers: list | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _io(
    layout: str,
    size: int,
    in_type: str,
    out_type: str,
    batch: int | str = "n",
    static: bool = True,
    out_size: int | None = None,
    out_layout: str | None = None,
) -> tuple:
    s_in = size if static else "h"
    s_out = (out_size or size) if static else "h2"
    x = helper.make_tensor_value_info("x", ELEM[in_type], _shape(layout, s_in, batch))
    y = helper.make_tensor_value_info(
        "y", ELEM[out_type], _shape(out_layout or layout, s_out, batch)
    )
    return x, y


def _const(name: str, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _to_nchw(layout: str, src: str, dst: str) -> list:
    if layout == "NCHW":
        return [helper.make_node("Identity", [src], [dst])]
    return [helper.make_node("Transpose", [src], [dst], perm=[0, 3, 1, 2])]


def _from_nchw(layout: str, src: str, dst: str) -> list:
    if layout == "NCHW":
        return [helper.make_node("Identity", [src], [dst])]
    return [helper.make_node("Transpose", [src], [dst], perm=[0, 2, 3, 1])]


def pu_model(
    scale: int = 8,
    size: int = 256,
    *,
    layout: str = "NCHW",
    dtype: str = "float",
    static: bool = True,
    exact: bool = True,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """A graph that IS the PU transform of its input: AveragePool ``scale``, Resize nearest.

    ``dtype="float"``: float32 in [0, 1] in and out. With ``exact`` the graph first recovers
    the integers (Mul 255, Round), pools them and divides by 255 at the end, so that each mean
    is the exact PU value; without it, it pools the [0, 1] values themselves, whose float32
    sums are off by a few ulps, which moves exact ties (x.5) of the rounded result.
    ``"uint8"``: uint8 in, Cast to float, pool, ONNX ``Round`` (half to even), Cast to uint8.
    """
    x, y = _io(layout, size, dtype, dtype, static=static)
    nodes = _to_nchw(layout, "x", "xc")
    inits = [_const("scales", [1, 1, scale, scale])]
    if dtype != "uint8" and exact:
        inits.append(_const("k255", 255))
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", ["xc"], ["xf"], to=TensorProto.FLOAT))
    elif exact:
        # Back to the integers the input encodes (x * 255, Round): their block sums are exact
        # in float32, so the means are the exact PU values and their ties survive.
        nodes += [
            helper.make_node("Mul", ["xc", "k255"], ["x255"]),
            helper.make_node("Round", ["x255"], ["xf"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["xc"], ["xf"]))
    nodes += [
        helper.make_node(
            "AveragePool", ["xf"], ["pooled"], kernel_shape=[scale, scale], strides=[scale, scale]
        ),
        helper.make_node(
            "Resize",
            ["pooled", "", "scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
    ]
    if dtype == "uint8":
        nodes += [
            helper.make_node("Round", ["up"], ["rounded"]),
            helper.make_node("Cast", ["rounded"], ["yc"], to=TensorProto.UINT8),
        ]
    elif exact:
        nodes.append(helper.make_node("Div", ["up", "k255"], ["yc"]))
    else:
        nodes.append(helper.make_node("Identity", ["up"], ["yc"]))
    nodes += _from_nchw(layout, "yc", "y")
    return _finish(nodes, [x], [y], inits, metadata)


def identity_model(
    size: int = 256,
    *,
    layout: str = "NHWC",
    dtype: str = "uint8",
    batch: int | str = "n",
    static: bool = True,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Output = input, whatever the encoding (uint8, float [0, 1], float [-1, 1] ...)."""
    x, y = _io(layout, size, dtype, dtype, batch=batch, static=static)
    return _finish([helper.make_node("Identity", ["x"], ["y"])], [x], [y], metadata=metadata)


def constant_model(
    value: float = 0.5,
    size: int = 256,
    *,
    layout: str = "NCHW",
    dtype: str = "float",
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Every output pixel equals ``value`` (0 * input + value), whatever the input."""
    x, y = _io(layout, size, dtype, dtype)
    np_type = {"float": np.float32, "double": np.float64, "uint8": np.uint8}[dtype]
    nodes = [
        helper.make_node("Mul", ["x", "zero"], ["z"]),
        helper.make_node("Add", ["z", "value"], ["y"]),
    ]
    inits = [_const("zero", 0, np_type), _const("value", value, np_type)]
    return _finish(nodes, [x], [y], inits, metadata)


def swap_range_model(size: int = 256, *, layout: str = "NHWC") -> bytes:
    """Input float in [0, 1], output the same image in [-1, 1] (2x - 1)."""
    x, y = _io(layout, size, "float", "float")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Sub", ["x2", "one"], ["y"]),
    ]
    return _finish(nodes, [x], [y], [_const("two", 2), _const("one", 1)])


def downsample_model(size: int = 256, *, factor: int = 2, static: bool = True) -> bytes:
    """The wrong output size: AveragePool by ``factor`` and no upsampling (NCHW float)."""
    x, y = _io("NCHW", size, "float", "float", static=static, out_size=size // factor)
    node = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[factor, factor], strides=[factor, factor]
    )
    return _finish([node], [x], [y])


def conv_model(size: int = 256, *, channels: int = 16, n_convs: int = 3, seed: int = 0) -> bytes:
    """A small image-to-image conv net: ``n_convs`` 3x3 convs (ReLU between, same padding),
    then a sigmoid; NCHW float32 [0, 1] in and out; seeded random weights."""
    rng = np.random.default_rng(seed)
    x, y = _io("NCHW", size, "float", "float")
    nodes, inits, prev, c_in = [], [], "x", 3
    for k in range(n_convs):
        c_out = 3 if k == n_convs - 1 else channels
        w = rng.normal(0, (2 / (9 * c_in)) ** 0.5, (c_out, c_in, 3, 3))
        inits += [_const(f"w{k}", w), _const(f"b{k}", rng.normal(0, 0.05, c_out))]
        out = f"c{k}"
        nodes.append(helper.make_node("Conv", [prev, f"w{k}", f"b{k}"], [out], pads=[1, 1, 1, 1]))
        if k < n_convs - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"]))
            out = f"r{k}"
        prev, c_in = out, c_out
    nodes.append(helper.make_node("Sigmoid", [prev], ["y"]))
    return _finish(nodes, [x], [y], inits)
