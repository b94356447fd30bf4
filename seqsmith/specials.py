"""The special ids every vocabulary starts with; data (tokenizers, batches) and models both read them here."""

PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID = 0, 1, 2, 3, 4
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
SEP = "<sep>"  # the dialogue turn separator, id SEP_ID
TRIPLE_ROLES = ("<S>", "<P>", "<O>")  # subject, predicate, object of a linearized knowledge-graph triple


def field_marker(name: str) -> str:
    """The token that opens input field ``name`` in a source of several fields (``data.fields``)."""
    return f"<{name}>"
