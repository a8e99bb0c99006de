import json

from data_gen.samples import arithmetic_steps, expert_sample, worked_response
from posttrain.files import truncate_jsonl
from posttrain.training import last_checkpoint, lr_lambda, tokenize_chat


def test_arithmetic_steps_follow_precedence():
    assert arithmetic_steps("3 + 5 * 2") == ["3 + 5 * 2", "3 + 10", "13"]
    assert arithmetic_steps("8 - (3 - 1)") == ["8 - (3 - 1)", "8 - 2", "6"]
    assert arithmetic_steps("(-9 + 4) * 3 / 5 - 2")[-1] == "-5"
    assert arithmetic_steps("import os") is None
    assert arithmetic_steps("1 / 0") is None


def test_expert_sample_ends_in_boxed_answer():
    row = {
        "prompt": [{"role": "user", "content": "Calculate 3 + 5 * 2."}],
        "answer": "13",
        "metadata": json.dumps({"expression": "3 + 5 * 2"}),
    }
    sample = expert_sample(row)
    assert sample["messages"][0] == row["prompt"][0]
    assert sample["messages"][1]["content"] == (
        "Let me evaluate it step by step.\n3 + 5 * 2\n= 3 + 10\n= 13\n\nThe answer is \\boxed{13}."
    )
    # a derivation that disagrees with the gold answer (other division rules) is not shown
    row["metadata"] = json.dumps({"expression": "7 / 2"})
    row["answer"] = "3"
    assert worked_response(row) == "The answer is \\boxed{3}."
    assert expert_sample({"prompt": "q", "answer": ""}) is None
    assert worked_response({"answer": "4", "solution": "2+2=4"}) == "2+2=4\n\nThe answer is \\boxed{4}."


def test_assistant_mask_covers_only_assistant_turns(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    msgs = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "It is 6."},
    ]
    out = tokenize_chat(msgs, tok, 512)
    kept = tok.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert kept == "4<|im_end|>It is 6.<|im_end|>"


def test_multistep_schedule_is_deepseek_llm():
    f = lr_lambda("multistep", num_warmup=10, num_training=100)
    assert f(0) < f(5) < f(10) == 1.0
    assert f(79) == 1.0 and f(80) == 0.316 and f(89) == 0.316 and f(90) == 0.1 and f(99) == 0.1
    cos = lr_lambda("cosine", 0, 100)
    assert cos(0) == 1.0 and abs(cos(50) - 0.5) < 1e-9 and cos(100) < 1e-9


def test_last_checkpoint_ignores_cut_off_saves(tmp_path):
    for step, complete in ((10, True), (20, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-25").mkdir()
    (tmp_path / "checkpoint-25" / "trainer_state.json").write_text('{"trunc')
    assert last_checkpoint(tmp_path).name == "checkpoint-20"
    assert not (tmp_path / "checkpoint-30").exists() and not (tmp_path / "checkpoint-25").exists()


def test_truncate_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 5, 10, 15)))
    truncate_jsonl(path, 10)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 5, 10]
