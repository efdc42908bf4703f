"""The ``basicsr`` command and the plugin's registration into basicsr's registries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

import qdr_plugin
from qdr_plugin.cli import main
from qdr_plugin.registry import register


def test_plugin_registers_its_classes():
    assert ARCH_REGISTRY.get('EFM') is qdr_plugin.archs.EFM
    assert MODEL_REGISTRY.get('QDRModel') is qdr_plugin.models.QDRModel
    assert DATASET_REGISTRY.get('GaussianNoiseDataset') is qdr_plugin.data.GaussianNoiseDataset


def test_a_different_class_under_a_taken_name_is_refused():
    class EFM:  # another plugin's class with our arch's name
        pass

    with pytest.raises(KeyError, match='already holds a different'):
        register(ARCH_REGISTRY)(EFM)


def test_reimport_beside_basicsr_archs_does_not_trip_the_assert():
    code = (
        'import qdr_plugin, importlib, sys\n'
        'import basicsr.archs, basicsr.models, basicsr.data\n'
        'for name in ("qdr_plugin.archs.efm_arch", "qdr_plugin.models.qdr_model",\n'
        '             "qdr_plugin.data.gaussian_noise_dataset"):\n'
        '    importlib.reload(importlib.import_module(name))\n'
        'importlib.reload(qdr_plugin)\n'
        'from basicsr.utils.registry import ARCH_REGISTRY\n'
        'assert "EFM" in ARCH_REGISTRY and "SwinIR" in ARCH_REGISTRY\n'
        'assert ARCH_REGISTRY.get("EFM").__module__ == "qdr_plugin.archs.efm_arch"\n'
        'print("ok")\n'
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert 'train' in out and 'test' in out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['trian', '-opt', 'x.yml'])
    assert exit_info.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / 'basicsr'  # installed by pip next to this interpreter
    result = subprocess.run([str(script), '--help'], capture_output=True, text=True)
    assert result.returncode == 0 and 'train' in result.stdout
