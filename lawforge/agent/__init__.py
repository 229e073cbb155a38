"""The LLM proposer: forms from any OpenAI-compatible endpoint, behind the search's Proposer protocol."""
