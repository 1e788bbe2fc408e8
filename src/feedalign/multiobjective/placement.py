"""Where a steerable model's weight tag goes in a prompt (``steer.placement``).

``user`` (default): at the start of the last user turn; ``system``: at the start of the system
turn (one is added when missing); ``prefix``: in front of everything; ``suffix``: right before
the completion. A rendered chat string is searched for the user-turn header of the common
templates (:data:`USER_HEADERS`); a plain string gets the tag in front.
"""

from __future__ import annotations

from typing import Any

PLACEMENTS = ("user", "system", "prefix", "suffix")
# User-turn headers of rendered conversations: ChatML (Qwen, SmolLM), feedalign's own message
# template (data/messages.py), Llama 3, and Llama 2 / Mistral instructions.
USER_HEADERS = ("<|im_start|>user\n", "<|user|>\n", "<|start_header_id|>user<|end_header_id|>\n\n", "[INST] ")


def place_tag(prompt: Any, tag: str, placement: str) -> Any:
    """``prompt`` (a string, or a list of ``{"role", "content"}`` messages) with ``tag`` (its
    trailing space included) at ``placement``."""
    if isinstance(prompt, str):
        if placement == "suffix":  # right before the completion
            return prompt + " " + tag.rstrip(" ")
        if placement != "prefix":
            at = max((prompt.rfind(h) + len(h) for h in USER_HEADERS if h in prompt), default=-1)
            if at >= 0:
                return prompt[:at] + tag + prompt[at:]
        return tag + prompt
    messages = [dict(m) for m in prompt]
    roles = [m.get("role") for m in messages]
    if placement == "system":
        if "system" not in roles:
            messages.insert(0, {"role": "system", "content": ""})
            roles.insert(0, "system")
        target = roles.index("system")
    elif "user" in roles:
        target = len(roles) - 1 - roles[::-1].index("user")
    else:
        raise ValueError(f"condition_prompt: messages {roles} have no 'user' turn for the weight tag; "
                         "use placement 'system' or 'prefix'")
    if placement == "prefix":
        target = 0
    if placement == "suffix":
        messages[target]["content"] = messages[target]["content"] + " " + tag.rstrip(" ")
    else:
        messages[target]["content"] = tag + messages[target]["content"]
    return messages
