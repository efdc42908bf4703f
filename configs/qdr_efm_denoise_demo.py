# QDR demo: EFM gray denoiser, sigma 25, on the demo images in datasets/demo (runs offline on a CPU); the mmengine
# twin of options/qdr_denoise.yml. FP32 warm-up for 1200 iterations, then QAT with FP32 self-distillation, DFD at
# the bottleneck and LMR, to 2000.
#   python -m qdr_plugin.mm train configs/qdr_efm_denoise_demo.py
_base_ = [
    '_base_/models/qdr_efm.py',
    '_base_/datasets/demo_gray_denoise.py',
    '_base_/schedules/qat_2k.py',
    '_base_/default_runtime.py',
]
