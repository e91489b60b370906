"""The `lowbit` command: demo and info run end to end."""
import subprocess
import sys

from lowbit.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "ISA features:" in out and "reference" in out and "Cache dir:" in out


def test_demo_tiny(capsys):
    assert main(["demo", "--preset", "tiny", "--iters", "2", "--seq", "8"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("a8w4 g32") for line in lines)
    assert any(line.startswith("w4 g128 hqq") for line in lines)
    # errors are finite numbers, smaller for more bits
    err = {line.split()[0] + line.split()[1]: float(line.split()[-3]) for line in lines if line.startswith(("w8 g128", "w2 g32"))}
    assert err["w8g128"] < err["w2g32"]


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "lowbit.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout and "info" in out.stdout


def test_import_is_light():
    # importing lowbit must not import triton, touch the GPU or build anything
    code = "import sys, lowbit; bad = [m for m in ('triton', 'lowbit.kernels', 'lowbit.cli', 'platformdirs') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
