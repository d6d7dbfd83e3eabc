"""Who is asking: API keys, browser tokens, and the per-process keyring (docs/api.md, Auth)."""
