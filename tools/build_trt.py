"""``python tools/build_trt.py model.onnx --engine out.engine [--fp16] [--shape 1x1x256x256] [--runs 50]``

Builds a TensorRT engine from an explicitly quantized (Q/DQ) ONNX model with the TensorRT Python API, saves it and
times it. The network is strongly typed when this TensorRT supports it (the Q/DQ nodes and the ONNX tensor types
fix every precision; no precision flags); ``--fp16`` (or a TensorRT without strong typing) builds a weakly typed
network with the INT8 flag instead (plus FP16 for the layers the Q/DQ leave in float). One optimization profile for
the input: dynamic N/H/W with min ``1 x C x 64 x 64``, opt ``--shape``, max ``N x C x 1024 x 1024`` (static
dimensions of the ONNX input stay as they are). Timing: the median of ``--runs`` executions after warm-up, with
torch CUDA tensors as I/O buffers (``set_tensor_address`` + ``execute_async_v3`` on torch's current stream).

Without TensorRT or a CUDA GPU it prints one line and exits with status 3. An existing ``--engine`` file is refused
(before the build) unless ``--overwrite``; the engine is written atomically.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

NO_EXIT = 3
MIN_HW, MAX_HW = 64, 1024


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Build and time a TensorRT engine from a Q/DQ ONNX model.')
    parser.add_argument('onnx', type=Path, help='an explicitly quantized (Q/DQ) ONNX model')
    parser.add_argument('--engine', type=Path, required=True, help='where to write the serialized engine')
    parser.add_argument('--overwrite', action='store_true', help='replace --engine if it exists')
    parser.add_argument('--fp16', action='store_true', help='weakly typed network, INT8 + FP16 builder flags')
    parser.add_argument('--shape', help='the optimal input shape NxCxHxW (default 1xCx256x256, C from the ONNX)')
    parser.add_argument('--runs', type=int, default=50, help='timed runs after warm-up (default 50)')
    parser.add_argument('--workspace', type=int, default=1024, help='workspace memory pool limit in MiB')
    return parser.parse_args(argv)


def _profile_shapes(dims: tuple[int, ...], shape: str | None) -> tuple[tuple[int, ...], ...]:
    """``(min, opt, max)`` input shapes; ``dims`` are the ONNX input's dimensions (-1: dynamic)."""
    if len(dims) != 4:
        raise SystemExit(f'build_trt: the input must be N x C x H x W, the ONNX declares {dims}.')
    channels = dims[1] if dims[1] > 0 else None
    if shape:
        opt = tuple(int(v) for v in shape.lower().split('x'))
        if len(opt) != 4 or min(opt) < 1 or (channels and opt[1] != channels):
            raise SystemExit(f'build_trt: --shape {shape} is not NxCxHxW matching the ONNX input {dims}.')
    elif channels:
        opt = (1, channels, 256, 256)
    else:
        raise SystemExit('build_trt: the ONNX input has a dynamic channel dimension: give --shape NxCxHxW.')
    low = (1, opt[1], min(MIN_HW, opt[2]), min(MIN_HW, opt[3]))
    high = (opt[0], opt[1], max(MAX_HW, opt[2]), max(MAX_HW, opt[3]))

    def fixed(candidate: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(d if d > 0 else v for d, v in zip(dims, candidate))

    return fixed(low), fixed(opt), fixed(high)


def build(trt, args: argparse.Namespace) -> tuple[bytes, tuple[int, ...]]:
    """Parse the ONNX file and build the serialized engine; returns it and the optimal input shape."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = trt.NetworkDefinitionCreationFlag
    strongly_typed = hasattr(creation, 'STRONGLY_TYPED') and not args.fp16
    if strongly_typed:
        flags = 1 << int(creation.STRONGLY_TYPED)
    else:
        flags = 1 << int(creation.EXPLICIT_BATCH) if hasattr(creation, 'EXPLICIT_BATCH') else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(args.onnx)):
        errors = '\n'.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f'build_trt: TensorRT could not parse {args.onnx}:\n{errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace << 20)
    if not strongly_typed:
        if args.fp16 and not hasattr(trt.BuilderFlag, 'FP16'):
            raise SystemExit('build_trt: this TensorRT only builds strongly typed networks: export an FP16 ONNX '
                             'instead of passing --fp16.')
        config.set_flag(trt.BuilderFlag.INT8)
        if args.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    low, opt, high = _profile_shapes(tuple(inp.shape), args.shape)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, low, opt, high)
    config.add_optimization_profile(profile)
    print(f"build_trt: building {'strongly' if strongly_typed else 'weakly'} typed network from {args.onnx}, "
          f'{inp.name} min {low} opt {opt} max {high}{" (+FP16)" if args.fp16 else ""} ...', flush=True)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SystemExit('build_trt: TensorRT failed to build the engine (see its log above).')
    return bytes(plan), opt


def benchmark(trt, plan: bytes, dims: tuple[int, ...], runs: int, warmup: int = 10) -> float:
    """Frames per second of the engine at input shape ``dims``: batch size / median latency of ``runs`` executions."""
    import numpy as np
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        context.set_input_shape(name, dims)
    buffers = {}
    for name in names:
        dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
        shape = tuple(context.get_tensor_shape(name))
        fill = torch.rand if name in inputs else torch.zeros  # inputs: an image in [0, 1)
        buffers[name] = fill(shape, device='cuda').to(dtype)
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.current_stream()
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        if not context.execute_async_v3(stream.cuda_stream):
            raise SystemExit('build_trt: execute_async_v3 failed.')
        stream.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return dims[0] / statistics.median(times)


def _check_engine_path(args: argparse.Namespace) -> None:
    """Refuse a bad ``--engine`` before the build, in one line (the plugin is imported only on a machine that can
    build)."""
    from qdr_plugin.errors import UserError
    from qdr_plugin.utils.output_paths import check_output_file

    try:
        check_output_file(args.engine, '--engine', args.overwrite, {'onnx': args.onnx}, 'model.engine')
    except UserError as error:
        sys.exit(f'build_trt: {error}')


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        import tensorrt as trt
    except ImportError:
        print('build_trt: TensorRT is not installed (pip install tensorrt) — nothing built.')
        return NO_EXIT
    import torch

    if not torch.cuda.is_available():
        print('build_trt: no CUDA GPU found — nothing built.')
        return NO_EXIT
    _check_engine_path(args)
    plan, opt = build(trt, args)
    from qdr_plugin.utils.atomic_write import atomic_write_bytes

    atomic_write_bytes(args.engine, plan)
    print(f'build_trt: wrote {args.engine} ({len(plan) / 2**20:.1f} MiB, TensorRT {trt.__version__}).')
    fps = benchmark(trt, plan, opt, args.runs)
    shape = 'x'.join(map(str, opt))
    print(f'build_trt: {shape} on {torch.cuda.get_device_name()}: {fps:.1f} frames/s '
          f'(median of {args.runs} runs after warm-up).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
