# QDR demo: EFM gray denoiser, sigma 25, on the demo images in datasets/demo (runs offline on a CPU); the mmengine
# twin of options/qdr_denoise.yml. FP32 warm-up for 1200 iterations, then QAT with FP32 self-distillation, DFD at
# the bottleneck and LMR.
#   python -m qdr_plugin.mm train configs/qdr_efm_denoise_demo.py
_base_ = [
    '_base_/datasets/demo_gray_denoise.py',
    '_base_/schedules/qat_2k.py',
    '_base_/default_runtime.py',
]

model = dict(
    type='QDRRestorer',
    network_g=dict(type='EFM', in_ch=1, width=32, depth=2, stem='unshuffle', up='deconv'),
    quant=dict(bits=8, act_symmetric=True, keep_fp32=[], calibration='percentile', calib_batches=4),
    train=dict(
        fp32_warmup_iter=1200,
        pixel_opt=dict(type='L1Loss', loss_weight=1.0),
        dfd_opt=dict(type='L1Loss', loss_weight=1.0),  # Decoder-Free Distillation at the bottleneck
        lmr_opt=dict(type='gradnorm', lr=0.01),  # Learnable Magnitude Reweighting
    ),
)
