"""``basicsr bench``: benchmark FP32 and INT8 models (PyTorch checkpoints, ONNX files) on the standard denoising,
super-resolution, deraining, dehazing and low-light sets, or on datasets of the options file, with one protocol
(docs/evaluation.md), and per-layer quantization sensitivity.

Modules: :mod:`.protocol` (sets and scoring), :mod:`.models` (``NAME=PATH`` -> a runnable model), :mod:`.timing`
(frames per second), :mod:`.runner` (scores, retention and its summary), :mod:`.report` (Markdown / JSON / CSV),
:mod:`.plots` (PNG figures), :mod:`.pictures` (side-by-side input / outputs / ground truth), :mod:`.sensitivity`
(one layer quantized at a time), :mod:`.bench_cli` (the command).
"""
