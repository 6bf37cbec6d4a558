"""Scoring of decoded test sets the way the paper scores them: pure functions, no model.

- :mod:`.metrics`: WER (raw and after Whisper's English normaliser), sacreBLEU with its signature.
- :mod:`.answers`: closed-answer extraction (SV, ER, speaking rate, SQA) and accuracy.
- :mod:`.instructions`: instruction following of II-task and CoT-task replies.
- :mod:`.tasks`: which metric a test set gets (task column or file name).
"""
