"""Code shared by agent, collector and tools: domain types, config, proto conversion.

Nothing here imports from agent, collector or tui.
"""
