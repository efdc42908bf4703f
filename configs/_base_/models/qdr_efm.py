# QDR on the EFM: FP32 warm-up, then QAT with FP32 self-distillation, Decoder-Free Distillation at the bottleneck
# and Learnable Magnitude Reweighting (the blocks of the YAML's network_g:, quant: and train:).
model = dict(
    type='QDRRestorer',
    network_g=dict(type='EFM', in_ch=1, width=32, depth=2, stem='unshuffle', up='deconv'),
    quant=dict(bits=8, act_symmetric=True, keep_fp32=[], calibration='percentile', calib_batches=4),
    train=dict(
        fp32_warmup_iter=1200,
        pixel_opt=dict(type='L1Loss', loss_weight=1.0),
        dfd_opt=dict(type='L1Loss', loss_weight=1.0),
        lmr_opt=dict(type='gradnorm', lr=0.01),
    ),
)
