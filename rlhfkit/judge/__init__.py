"""Judges: a pairwise LLM judge over any OpenAI-compatible API, and a reward model as judge."""
