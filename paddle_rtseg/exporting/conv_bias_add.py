"""Conv biases as channel adds in a saved legacy program, the form inference engines fuse.

Paddle 3.0's legacy export writes a convolution's bias as ``reshape2(bias) -> [1, C, 1, 1]`` and an
``elementwise_add(axis=-1)``. oneDNN's ``conv_bias_onednn_fuse_pass`` takes only a 1-D persistable
bias added on ``axis=1`` (its op-compat check: "Check the Attr(axis) of Op(elementwise_add) in
pass(conv_bias_onednn_fuse_pass) failed!"), so Paddle Inference left every such convolution and its
add as two operators: 39 of SegFormer++-B0's, 11 of RTFormer-Slim's. Adding the 1-D bias on axis 1
is the same function, the form Paddle 2.x exported, and every backend here reads it (tests/test_deploy.py,
tests/test_arm.py).
"""

CONV_OPS = ("conv2d", "depthwise_conv2d")


def _argument(op, parameter, outputs=False):
    for slot in (op.outputs if outputs else op.inputs):
        if slot.parameter == parameter and slot.arguments:
            return slot
    return None


def conv_bias_as_channel_add(pdmodel_path):
    """Rewrite ``conv -> add(reshape2(bias), axis=-1)`` into ``conv -> add(bias, axis=1)`` in place,
    dropping the ``reshape2`` (only where the bias is a 1-D persistable variable and the reshaped
    copy feeds nothing else). Returns the number of adds rewritten."""
    from paddle_rtseg_runtime.program import read_program, tensor_desc
    program = read_program(pdmodel_path)
    rewritten = 0
    for block in program.blocks:
        variables = {v.name: v for v in block.vars}
        producer, readers = {}, {}
        for op in block.ops:
            for slot in op.outputs:
                for name in slot.arguments:
                    producer[name] = op
            for slot in op.inputs:
                for name in slot.arguments:
                    readers[name] = readers.get(name, 0) + 1
        index = {}
        for i, op in enumerate(block.ops):
            for slot in op.outputs:
                for name in slot.arguments:
                    index[name] = i
        dropped = set()
        for op in block.ops:
            x, y = _argument(op, "X"), _argument(op, "Y")
            if op.type != "elementwise_add" or x is None or y is None:
                continue
            conv, reshape = producer.get(x.arguments[0]), producer.get(y.arguments[0])
            if conv is None or conv.type not in CONV_OPS or reshape is None \
                    or reshape.type != "reshape2" or readers[y.arguments[0]] != 1:
                continue
            bias = _argument(reshape, "X").arguments[0]
            var = variables.get(bias)
            out_channels = tensor_desc(variables[x.arguments[0]]).dims
            if var is None or not var.persistable \
                    or list(tensor_desc(var).dims) != [out_channels[1]]:
                continue
            dropped.add(index[y.arguments[0]])
            y.arguments[0] = bias
            for attr in op.attrs:
                if attr.name == "axis":
                    attr.i = 1
            rewritten += 1
        if dropped:
            kept = []
            for i, op in enumerate(block.ops):
                if i not in dropped:
                    copy = type(op)()
                    copy.CopyFrom(op)
                    kept.append(copy)
            del block.ops[:]
            block.ops.extend(kept)
    if rewritten:
        with open(pdmodel_path, "wb") as f:
            f.write(program.SerializeToString())
    return rewritten
