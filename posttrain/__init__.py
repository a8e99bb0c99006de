"""posttrain: DeepSeek-V3-style post-training as one recipe of chained, cached, resumable stages."""

__version__ = "0.1.0"
