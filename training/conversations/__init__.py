"""Chat conversations as tokens: the protocol the engine samples and post-training trains on."""
from training.conversations.render import (ConversationError, parse_assistant, render_conversation,
                                           render_for_completion)

__all__ = ["ConversationError", "parse_assistant", "render_conversation", "render_for_completion"]
