"""``hybrid tune export --for vllm|llamacpp`` on a real PEFT LoRA adapter (over the tiny model)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from hybrid.cli import main
from tests.generation.conftest import make_lora


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["tune", "export", *args])
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory):
    return make_lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "legal", seed=1, base_sha="tiny",
                     base_id="SmolLM2-135M-Instruct")


def test_vllm_export_writes_a_servable_peft_dir_and_prints_the_launch_command(lora, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "legal-vllm"
    code, stdout, err = run("--adapter", str(lora), "--for", "vllm", "--out", str(out), "--name", "legal")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_card.json", "adapter_config.json",
                                                     "adapter_model.safetensors"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not this machine's path
    assert load_file(out / "adapter_model.safetensors").keys() == load_file(lora / "adapter_model.safetensors").keys()
    assert (f"vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora --max-lora-rank 8 "
            f"--lora-modules legal={out}") in stdout
    assert "adapter_model: legal" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    code, _, err = run("--adapter", str(lora), "--for", "vllm", "--out", str(out))
    assert code == 2 and err.strip() == f"error: {out} already exists; pass --force to replace it"
    assert run("--adapter", str(lora), "--for", "vllm", "--out", str(out), "--force")[0] == 0


def test_llamacpp_export_prints_the_conversion_command_and_writes_nothing(lora, tmp_path):
    code, stdout, err = run("--adapter", str(lora), "--for", "llamacpp", "--out", str(tmp_path))
    assert code == 0, err
    assert "convert_lora_to_gguf.py --base " in stdout and f"--outfile {tmp_path}/legal-lora-f16.gguf {lora}" in stdout
    assert f" --lora {tmp_path}/legal-lora-f16.gguf --alias legal --port 8080" in stdout
    assert "llama-server -m " in stdout and ".gguf --lora" in stdout  # the embedded model's own GGUF
    assert "nothing was written" in stdout and list(tmp_path.iterdir()) == []


def test_bad_adapters_are_one_line_errors(tmp_path, lora):
    code, _, err = run("--adapter", str(tmp_path / "nope"), "--for", "vllm")
    assert code == 2 and err.strip() == f"error: adapter directory {tmp_path / 'nope'} not found"
    ia3 = tmp_path / "ia3"
    ia3.mkdir()
    (ia3 / "adapter_config.json").write_text('{"peft_type": "IA3"}')
    code, _, err = run("--adapter", str(ia3), "--for", "vllm")
    assert code == 2 and "is a IA3 adapter; vLLM and llama.cpp serve LoRA adapters only" in err
    (ia3 / "adapter_config.json").write_text("{not json")
    code, _, err = run("--adapter", str(ia3), "--for", "llamacpp")
    assert code == 2 and "unreadable adapter config" in err and len(err.strip().splitlines()) == 1
    pickled = tmp_path / "bin"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (pickled / "adapter_model.bin").write_bytes(b"x")
    code, _, err = run("--adapter", str(pickled), "--for", "vllm")
    assert code == 2 and "has no adapter_model.safetensors" in err
    code, _, err = run("--adapter", str(lora), "--for", "vllm", "--out", str(lora))
    assert code == 2 and "--out must differ" in err
