"""Inference without DeepSpeed: load an exported model, decode with a KV cache, run tools mid-turn.

    engine.py       Engine, SamplingParams, Completion, TokenEvent (batched generation, streaming)
    tools.py        the tool registry (default_tools) and the error-safe call (run_tool)
    python_tool.py  the sandboxed python tool (sandbox_child.py is its child process)
    search.py       full-text search over the clean corpus, as a tool
The chat CLI and the HTTP server sit beside them. Nothing is imported here, so importing one module
(say `training.engine.search`) does not pay for torch.
"""
