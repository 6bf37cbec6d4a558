"""Text side of WavLLM: the LLM tokenizers behind one interface and the prompt templates (chat
format, the ``<SPEECH>`` span, the quoted instruction). It imports no model package."""
