"""`convert_to_fp8` / `convert_from_fp8` on transformers models built from a config: the SmolLM2-135M shapes
(hidden 576, intermediate 1536, k/v 192) convert entirely, the head stays high precision, parameters and state
dicts are unchanged, and save/load, optimizers, deepcopy and gradient checkpointing keep working."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.model.fp8 import Fp8Linear, Fp8Report, calc_diff, convert_from_fp8, convert_to_fp8

SMOLLM2_SHAPES = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    tie_word_embeddings=True,
)
LAYER_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


pytestmark = pytest.mark.usefixtures("one_thread")


def smollm2_like(num_layers: int = 2, vocab_size: int = 256) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, num_hidden_layers=num_layers, max_position_embeddings=64, **SMOLLM2_SHAPES
    )
    return LlamaForCausalLM(config).eval()


def convert_quietly(model: nn.Module, **kwargs) -> Fp8Report:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_to_fp8(model, **kwargs)


def test_smollm2_shapes_convert_entirely_and_head_stays():
    model = smollm2_like()
    state_before = {k: (v.shape, v.data_ptr()) for k, v in model.state_dict().items()}
    with pytest.warns(
        UserWarning, match=r"14 Linear layers converted, 1 left in high precision.*lm_head \(output head"
    ):
        report = convert_to_fp8(model, backend="reference")
    expected = [f"model.layers.{i}.{p}.{name}" for i in range(2) for p, name in _layer_names()]
    assert sorted(report.converted) == sorted(expected)
    assert list(report.skipped) == ["lm_head"] and "high precision" in report.skipped["lm_head"]
    assert type(model.lm_head) is nn.Linear and isinstance(model.model.layers[0].self_attn.k_proj, Fp8Linear)
    assert {k: (v.shape, v.data_ptr()) for k, v in model.state_dict().items()} == state_before
    assert report.to_dict()["backend"] == "reference"


def _layer_names():
    return [("self_attn", n) for n in LAYER_LINEARS[:4]] + [("mlp", n) for n in LAYER_LINEARS[4:]]


def test_converted_forward_close_and_convert_back_exact():
    model = smollm2_like()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
        convert_quietly(model, backend="reference")
        fp8_logits = model(ids).logits
        assert calc_diff(fp8_logits, logits) < 1e-2  # measured 3.8e-3: the errors of 14 FP8 GEMMs add up
        restored = convert_from_fp8(model)
        assert len(restored) == 14
        assert not any(isinstance(m, Fp8Linear) for m in model.modules())
        assert torch.equal(model(ids).logits, logits)


def test_save_pretrained_loads_as_plain_model(tmp_path):
    model = smollm2_like(num_layers=1)
    convert_quietly(model, backend="reference")
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert not any(isinstance(m, Fp8Linear) for m in reloaded.modules())
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_optimizer_built_before_conversion_still_trains():
    model = smollm2_like(num_layers=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    convert_quietly(model, backend="reference")
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    q_proj = model.model.layers[0].self_attn.q_proj
    before = q_proj.weight.detach().clone()
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    assert q_proj.weight.grad is not None and q_proj.weight.grad.dtype == torch.float32
    optimizer.step()
    assert not torch.equal(q_proj.weight, before)


def test_deepcopy_and_gradient_checkpointing():
    model = smollm2_like(num_layers=1)
    convert_quietly(model, backend="reference")
    reference = copy.deepcopy(model)  # TRL builds its reference model this way
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, model(ids).logits)
    model.train()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(model.model.layers[0].mlp.down_proj.weight.grad.clone())
    assert torch.equal(grads[0], grads[1]), "recomputation must quantize identically"


class _MoEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(128, 8, bias=False)  # router
        self.up_proj = nn.Linear(128, 256)
        self.down_proj = nn.Linear(256, 128)
        self.adapter = _LoraLikeLinear(128, 128)
        self.norm = nn.LayerNorm(128)


class _LoraLikeLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_filter_fn_routers_and_subclasses_are_reported():
    block = _MoEBlock()
    with pytest.warns(UserWarning, match="Left out: gate"):
        report = convert_to_fp8(block, filter_fn=lambda module, name: name != "down_proj", backend="reference")
    assert report.converted == ["up_proj"]
    assert set(report.skipped) == {"gate", "down_proj", "adapter"}
    assert "router" in report.skipped["gate"] and report.skipped["down_proj"] == "excluded by filter_fn"
    assert "only plain nn.Linear" in report.skipped["adapter"]
    assert isinstance(block.norm, nn.LayerNorm)


def test_converting_twice_is_a_no_op():
    model = smollm2_like(num_layers=1)
    first = convert_quietly(model, backend="reference")
    layer = model.model.layers[0].mlp.up_proj
    second = convert_quietly(model, backend="reference")
    assert second.converted == first.converted and model.model.layers[0].mlp.up_proj is layer


def test_shared_linear_converts_once():
    shared = nn.Linear(128, 128)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = convert_quietly(model, backend="reference")
    assert report.converted == ["0", "2"] and model[0] is model[2] and isinstance(model[0], Fp8Linear)
    assert convert_from_fp8(model) == ["0", "2"] and model[0] is model[2] and type(model[0]) is nn.Linear


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="scale mode"):
        convert_to_fp8(nn.Linear(128, 128), scale="bf16")
    with pytest.raises(ValueError, match="not an FP8 backend"):
        convert_to_fp8(nn.Sequential(nn.Linear(128, 128)), backend="deepgemm")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use backend='reference' \\(CPU emulation\\) or 'auto'"):
            convert_to_fp8(nn.Sequential(nn.Linear(128, 128)), backend="triton")


def test_bf16_weights_warn_about_master_weights():
    model = nn.Sequential(nn.Linear(128, 128)).bfloat16()
    with pytest.warns(UserWarning, match="not FP32 master weights"):
        convert_to_fp8(model, backend="reference")
    y = model(torch.randn(4, 128, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


@pytest.mark.slow
def test_embedded_smollm2_converts_entirely():
    """The real embedded model (SmolLM2-135M-Instruct, 30 layers): all 210 attention/MLP Linears convert, the
    tied head stays, and the FP8 forward (never trained in FP8) still answers like the original."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.model.loading import embedded_path

    path = str(embedded_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    chat = [{"role": "user", "content": "What is 12+7?"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
        report = convert_quietly(model)
        fp8_logits = model(ids).logits
        answer = model.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1] :]
    assert len(report.converted) == 210 and list(report.skipped) == ["lm_head"]
    assert calc_diff(fp8_logits, logits) < 3e-2  # measured 1.3e-2 over 30 layers
    assert "19" in tokenizer.decode(answer)


def test_high_precision_context_runs_plain_linear_and_restores():
    from posttrain.model.fp8 import high_precision

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 256))
    plain = [nn.Linear(256, 128), nn.Linear(128, 256)]
    plain[0].load_state_dict(model[0].state_dict())
    plain[1].load_state_dict(model[2].state_dict())
    x = torch.randn(4, 256)
    expected = plain[1](torch.relu(plain[0](x)))
    convert_to_fp8(model)
    with high_precision(model):
        assert torch.equal(model(x), expected)
    assert not torch.equal(model(x), expected) and all(m.fp8_enabled for m in model if isinstance(m, Fp8Linear))
