"""One rank of the mmengine front's 2-process gloo test (run by ``torchrun`` from ``tests/test_mm_front.py``):
trains CONFIG with ``--launcher pytorch``, then compares every rank's final model with rank 0's and writes
``{'max_diff': ..., 'quantized': ...}`` to OUT (rank 0)."""

import json
import os
import sys

import torch
import torch.distributed as dist

from qdr_plugin.mm.cli import build_runner

if __name__ == '__main__':
    config, work_dir, out, *options = sys.argv[1:]
    runner = build_runner('train', config, work_dir, options, launcher='pytorch')
    runner.train()
    model = runner.model.module
    flat = torch.cat([v.detach().flatten().double() for v in model.state_dict().values() if v.is_floating_point()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() == 0:
        diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
        with open(out, 'w') as file:
            json.dump({'max_diff': diff, 'quantized': model.quantized, 'world': len(gathered)}, file)
    dist.barrier()
    # Leave without the interpreter's teardown: a C++ thread of the process group still joinable there can make a rank
    # abort ("terminate called without an active exception") after its work is done and written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
