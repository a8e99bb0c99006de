import pytest

from posttrain.errors import ModelError
from posttrain.model import loading


def test_embedded_is_cached_as_hf_folder_and_not_converted_twice(monkeypatch):
    path = loading.embedded_path()
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert (path / "chat_template.jinja").is_file() or "chat_template" in (path / "tokenizer_config.json").read_text()

    def no_conversion(out):
        raise AssertionError("second load converted the GGUF again")

    monkeypatch.setattr(loading, "_convert_embedded", no_conversion)
    assert loading.embedded_path() == path
    assert loading.resolve_model(None) == loading.resolve_model("embedded") == str(path)


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    assert loading.cache_dir() == tmp_path


def test_tiny_model_is_two_layer_llama_with_real_tokenizer(tiny_path):
    model, tok = loading.load_model_and_tokenizer("tiny")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert len(tok) == 49152 and "<|im_start|>" in tok.chat_template


def test_missing_path_and_uncached_hub_id(monkeypatch):
    with pytest.raises(ModelError, match="model path './nope' does not exist; use 'embedded'"):
        loading.resolve_model("./nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelError, match="hub model 'posttrain-test/not-a-model' is not in the local HF cache .*use 'embedded'"
    ):
        loading.load_model_and_tokenizer("posttrain-test/not-a-model")


@pytest.mark.parametrize("native_bf16", [False, True])
def test_cpu_inference_runs_in_float32_where_bf16_is_emulated(monkeypatch, native_bf16):
    """The embedded checkpoint is bf16; an AVX2-only CPU generates it at half the speed of fp32 (see cpu_has_bf16)."""
    import torch

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: native_bf16)
    model, _ = loading.load_model_and_tokenizer("embedded")
    assert model.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    trained, _ = loading.load_model_and_tokenizer("embedded", for_training=True)
    assert trained.dtype == torch.float32  # training on CPU keeps fp32 master weights either way
