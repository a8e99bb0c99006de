"""Data generation: prompt sources, SFT sample builders, rejection sampling and the SFT mix."""
