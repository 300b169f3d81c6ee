"""Gateway adapters and what they need: the account model, the error tree, HTTP helpers."""
