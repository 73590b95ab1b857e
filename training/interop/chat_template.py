"""The chat protocol (training/conversations/render.py) as templates other runtimes apply.

CHAT_TEMPLATE is Jinja, the form transformers (`apply_chat_template`), vLLM, llama.cpp (`--jinja`)
and LM Studio read. It renders what render.py renders, token for token, because the special tokens
are written as their strings (every runtime's tokenizer matches those first) and each stretch of
text between two of them is encoded alone, as render.py encodes each piece alone:

    <|endoftext|><|im_start|>ROLE<|im_sep|>CONTENT<|im_end|>... [<|im_start|>assistant<|im_sep|>]

Assistant content may be a list of parts, as in render.py: {"type": "text", "text"}, {"type":
"tool_call", "name", "arguments"} -> <|tool_start|>NAME<|im_sep|>ARGS<|tool_end|>, {"type":
"tool_output", "text"} -> <|output_start|>TEXT<|output_end|>. Two differences are inherent to any
string template: text that itself spells a special token ("<|im_end|>") becomes that token in other
runtimes (render.py keeps it as plain bytes), and two text parts in a row are encoded as one string.

OLLAMA_TEMPLATE is the same protocol as a Go template for an Ollama Modelfile (string contents only:
Ollama's messages have no content parts).
"""
from __future__ import annotations

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '<|im_sep|>' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- elif part['type'] == 'tool_call' -%}"
    "{{- '<|tool_start|>' + part['name'] + '<|im_sep|>' + part['arguments'] + '<|tool_end|>' -}}"
    "{%- elif part['type'] == 'tool_output' -%}"
    "{{- '<|output_start|>' + part['text'] + '<|output_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown content part type: ' + part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant<|im_sep|>' -}}"
    "{%- endif -%}"
)

OLLAMA_TEMPLATE = ("<|endoftext|>{{- range .Messages }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}"
                   "<|im_end|>{{- end }}<|im_start|>assistant<|im_sep|>")

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
