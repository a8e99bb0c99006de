"""Data that ships with posttrain: `chat_prompts.jsonl`, the built-in non-reasoning prompts (source `builtin:chat_prompts`)."""
